"""The leakage check: reference images found in the training shards stop val metrics unless allowed."""

import json

import pytest
from metrics_fixture import (
    TRAIN_IDS,
    VAL_IDS,
    LookupGenerator,
    encode_ids,
    jpeg_bytes,
    metrics_config,
    single_runtime,
    textured_images,
    write_image_shards,
)

from textgan.metrics import LeakageError, MetricEvaluator


@pytest.fixture()
def planted(tmp_path):
    """train: 64 textures; val: 96 others, except that position 5 reuses train id 7 (another picture) and
    position 40 stores train image 20's exact JPEG under a val id."""
    train_images = textured_images(len(TRAIN_IDS), 16, seed=1)
    write_image_shards(tmp_path / "train", train_images, TRAIN_IDS, split="train")
    val_ids = VAL_IDS.copy()
    val_ids[5] = TRAIN_IDS[7]
    val = write_image_shards(tmp_path / "val", textured_images(len(val_ids), 16, seed=0), val_ids, split="val",
                             jpegs={40: jpeg_bytes(train_images[20])})
    return tmp_path, val_ids, val


def _evaluator(root, metrics, run_dir=None, **changes):
    cfg = metrics_config(root, str(root / "val"), str(root / "train"), metrics, **changes)
    return MetricEvaluator(cfg, runtime=single_runtime(), run_dir=run_dir, log=lambda *a: None)


def test_a_planted_duplicate_stops_val_metrics_and_is_named(planted):
    root, val_ids, _ = planted
    with pytest.raises(LeakageError) as info:
        _evaluator(root, ["fid32"]).prepare()
    message = str(info.value)
    assert "1 reference image ids (e.g. [7])" in message
    assert f"1 reference JPEGs byte-identical to training images (e.g. ids [{val_ids[40]}])" in message
    assert "allow_overlap" in message and str(root / "train") in message


def test_allow_overlap_measures_and_records_the_overlap(planted, tmp_path_factory):
    root, val_ids, val = planted
    run_dir = tmp_path_factory.mktemp("run")
    warnings = []
    cfg = metrics_config(root, str(root / "val"), str(root / "train"), ["fid32"], allow_overlap=True)
    ev = MetricEvaluator(cfg, runtime=single_runtime(), run_dir=str(run_dir), log=warnings.append)
    report = ev.run(LookupGenerator(val_ids, val), encode_ids)
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: LEAKAGE")
    leak = json.loads((run_dir / "metric-fid32.jsonl").read_text())["protocol"]["leakage"]
    assert (leak["n_ids"], leak["ids"], leak["n_bytes"], leak["bytes"]) == (1, [7], 1, [int(val_ids[40])])
    assert report["fid32"].protocol["leakage"] == leak


def test_train_metrics_need_no_check_and_clean_sets_pass(planted, tmp_path):
    root, _, _ = planted
    _evaluator(root, ["fid32_train"]).prepare()  # against the training set by name: nothing to check
    clean = tmp_path / "clean"
    write_image_shards(clean / "train", textured_images(64, 16, seed=1), TRAIN_IDS, split="train")
    write_image_shards(clean / "val", textured_images(96, 16, seed=0), VAL_IDS, split="val")
    _evaluator(clean, ["fid32"]).prepare()


def test_ids_are_only_compared_within_one_id_space(planted):
    root, _, _ = planted
    # Mark the reference as another source: its ids mean other images, only bytes can be compared.
    manifest_path = root / "val" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["source"] = "coco"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(LeakageError) as info:
        _evaluator(root, ["fid32"]).prepare()
    assert "0 reference image ids" in str(info.value) and "1 reference JPEGs" in str(info.value)


def test_without_training_shards_the_check_cannot_be_skipped_silently(planted):
    root, _, _ = planted
    with pytest.raises(Exception, match="leakage check needs the training shards"):
        _evaluator(root, ["fid32"], train_shards=None).prepare()
    ev = _evaluator(root, ["fid32"], train_shards=None, allow_overlap=True)
    ev.prepare()
    assert ev._leakage["val"] == {"checked": False, "reason": "no training shards given (allow_overlap)"}
