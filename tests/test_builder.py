"""Shard builder, in process: what the shards and the manifest hold for shapes and COCO data."""

import hashlib
import io
import json
import os

import numpy as np
import pytest
from build_util import all_samples, decode, read_bytes, read_manifest
from coco_fixture import make_coco_fixture

from textgan.data import format as fmt
from textgan.data.building.cli import main
from textgan.data.building.builder import BUILDER_VERSION, OVERLAP_REASON
from textgan.data.sources.shapes import shapes_records

QUIET = ["--no-progress", "--workers", "1"]


def build(*args) -> int:
    return main([*map(str, args), *QUIET])


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return make_coco_fixture(root)


def test_shapes_build_writes_manifest_and_decodable_samples(tmp_path):
    out = tmp_path / "out"
    assert build("shapes", "--outdir", out, "--n", 60, "--resolution", 16, "--samples-per-shard", 25) == 0
    m = read_manifest(out)
    assert (m["format"], m["format_version"], m["builder_version"]) == (fmt.FORMAT_NAME, fmt.FORMAT_VERSION,
                                                                        BUILDER_VERSION)
    assert (m["source"], m["split"], m["samples"]) == ("shapes", "train", 60)
    assert [s["samples"] for s in m["shards"]] == [25, 25, 10]
    assert [s["name"] for s in m["shards"]] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    for shard in m["shards"]:
        assert hashlib.sha256(read_bytes(out / shard["name"])).hexdigest() == shard["sha256"]
    s = m["settings"]
    assert (s["resolution"], s["crop"], s["quality"], s["seed"], s["limit"], s["samples_per_shard"], s["n"]) == \
        (16, "center", 95, 0, None, 25, 60)
    assert s["features"] == {"clip": None, "perceptual": None}
    assert (m["skipped"], m["captions_dropped"], m["captions_dropped_by_reason"]) == ([], 0, {})
    assert len(m["annotations_sha256"]) == 64

    expected = {r.image_id: r for r in shapes_records(60, seed=0, split="train")}
    samples = all_samples(out, m)
    assert sorted(int(key) for _, key, _ in samples) == sorted(expected)
    for _, key, entries in samples:
        assert set(entries) == {"jpg", "json", "txt"}
        img = decode(entries["jpg"])
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (16, 16))
        meta = json.loads(entries["json"])
        record = expected[int(key)]
        assert key == fmt.sample_key(meta["image_id"])
        assert meta["captions"] == record.captions and meta["attributes"] == record.attributes
        assert entries["txt"].decode("utf-8") == record.captions[0]  # open_clip / img2dataset tools read txt
        assert (meta["width"], meta["height"], meta["split"], meta["file_name"]) == (16, 16, "train", record.file_name)


def test_shapes_coco_layout_builds_through_the_coco_path(tmp_path):
    layout, out_shapes, out_coco = tmp_path / "layout", tmp_path / "shapes", tmp_path / "coco"
    assert build("shapes", "--outdir", out_shapes, "--n", 12, "--resolution", 32, "--split", "val",
                 "--coco-layout", layout) == 0
    assert (layout / "annotations" / "captions_val2014.json").is_file()
    assert len(os.listdir(layout / "val2014")) == 12
    assert build("coco", "--root", layout, "--split", "val", "--outdir", out_coco, "--resolution", 32) == 0
    from_shapes = {int(k): json.loads(e["json"]) for _, k, e in all_samples(out_shapes)}
    from_coco = {int(k): json.loads(e["json"]) for _, k, e in all_samples(out_coco)}
    assert sorted(from_coco) == sorted(from_shapes) and len(from_coco) == 12
    for image_id, meta in from_coco.items():
        assert meta["captions"] == from_shapes[image_id]["captions"]
        assert (meta["width"], meta["height"], meta["split"]) == (32, 32, "val")
    # Same seed: the COCO build of the layout stores the same images in the same shard order.
    assert [k for _, k, _ in all_samples(out_coco)] == [k for _, k, _ in all_samples(out_shapes)]
    assert read_manifest(out_coco)["overlap"]["checked_against"] == []  # no train split in the layout


def test_coco_train_skips_every_bad_case_with_its_reason(coco, tmp_path):
    out = tmp_path / "out"
    assert build("coco", "--root", coco["root"], "--split", "train", "--outdir", out, "--resolution", 32,
                 "--samples-per-shard", 4) == 0
    expect, m = coco["train"], read_manifest(out)
    assert {e["image_id"]: e["reason"] for e in m["skipped"]} == expect["skip"]
    assert all(e["file_name"] == expect["file_names"][e["image_id"]] for e in m["skipped"])
    assert m["captions_dropped"] == expect["captions_dropped"]
    assert m["captions_dropped_by_reason"] == expect["captions_dropped_by_reason"]
    assert m["samples"] == len(expect["good_ids"])
    samples = all_samples(out, m)
    assert sorted(int(k) for _, k, _ in samples) == expect["good_ids"]
    for _, key, entries in samples:
        img, meta = decode(entries["jpg"]), json.loads(entries["json"])
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (32, 32))
        assert meta["captions"] == expect["captions"][int(key)]
        assert (meta["width"], meta["height"]) == expect["sizes"][int(key)]
        assert meta["split"] == "train" and "attributes" not in meta
    assert m["annotations_sha256"] == hashlib.sha256(
        read_bytes(os.path.join(coco["root"], "annotations", "captions_train2014.json"))).hexdigest()


def test_coco_val_reports_overlap_and_excludes_it_on_request(coco, tmp_path, capsys):
    kept, excluded = tmp_path / "kept", tmp_path / "excluded"
    overlapping = set(coco["overlap"]["ids"]) | set(coco["overlap"]["bytes"])
    assert build("coco", "--root", coco["root"], "--split", "val", "--outdir", kept, "--resolution", 16) == 0
    assert "split overlap: 2 of" in capsys.readouterr().err
    m = read_manifest(kept)
    assert m["overlap"] == {"checked_against": [coco["root"]], "ids": coco["overlap"]["ids"],
                            "bytes": coco["overlap"]["bytes"], "excluded": False}
    assert {e["image_id"]: e["reason"] for e in m["skipped"]} == coco["val"]["skip"]
    assert sorted(int(k) for _, k, _ in all_samples(kept)) == coco["val"]["good_ids"]

    assert build("coco", "--root", coco["root"], "--split", "val", "--outdir", excluded, "--resolution", 16,
                 "--exclude-overlap") == 0
    assert "EXCLUDED" in capsys.readouterr().err
    m = read_manifest(excluded)
    assert m["overlap"]["excluded"] is True and m["settings"]["exclude_overlap"] is True
    ids = sorted(int(k) for _, k, _ in all_samples(excluded))
    assert ids == sorted(set(coco["val"]["good_ids"]) - overlapping)
    reasons = {e["image_id"]: e["reason"] for e in m["skipped"]}
    assert reasons == {**coco["val"]["skip"], **{i: OVERLAP_REASON for i in overlapping}}


def test_overlap_reference_folder_is_checked_for_train_too(coco, tmp_path):
    out = tmp_path / "out"
    val_folder = os.path.join(coco["root"], "val2014")
    assert build("coco", "--root", coco["root"], "--split", "train", "--outdir", out, "--resolution", 16,
                 "--overlap-reference", val_folder) == 0
    overlap = read_manifest(out)["overlap"]
    # Train image 1 has a byte copy in val (105); id 5 is in both splits.
    assert (overlap["checked_against"], overlap["ids"], overlap["bytes"]) == ([val_folder], [5], [1])


def _ids_per_shard(out):
    shards = {}
    for name, key, _ in all_samples(out):
        shards.setdefault(name, []).append(int(key))
    return list(shards.values())


def test_same_seed_gives_identical_bytes_and_workers_do_not_matter(tmp_path):
    args = ["shapes", "--n", 40, "--resolution", 16, "--samples-per-shard", 16, "--seed", 3, "--no-progress"]
    outs = [tmp_path / name for name in ("a", "b", "c")]
    assert main([*map(str, args), "--outdir", str(outs[0]), "--workers", "1"]) == 0
    assert main([*map(str, args), "--outdir", str(outs[1]), "--workers", "1"]) == 0
    assert main([*map(str, args), "--outdir", str(outs[2]), "--workers", "2"]) == 0
    files = [{n: read_bytes(o / n) for n in sorted(os.listdir(o))} for o in outs]
    assert files[0] == files[1] == files[2]
    assert len([n for n in files[0] if n.endswith(".tar")]) == 3


def test_seed_changes_assignment_and_limit_keeps_a_prefix(tmp_path):
    base = ["shapes", "--n", 30, "--resolution", 16, "--samples-per-shard", 10]
    assert build(*base, "--outdir", tmp_path / "s0") == 0
    assert build(*base, "--outdir", tmp_path / "s1", "--seed", 1) == 0
    assert build(*base, "--outdir", tmp_path / "lim", "--limit", 13) == 0
    s0, lim = _ids_per_shard(tmp_path / "s0"), _ids_per_shard(tmp_path / "lim")
    assert s0 != _ids_per_shard(tmp_path / "s1")
    # Seed 1 generates other scenes too, but the order is a permutation, not the id order.
    assert [i for ids in s0 for i in ids] != sorted(i for ids in s0 for i in ids)
    assert [len(ids) for ids in lim] == [10, 3]
    assert [i for ids in lim for i in ids] == [i for ids in s0 for i in ids][:13]
    assert read_manifest(tmp_path / "lim")["settings"]["limit"] == 13


def test_crop_pad_and_quality_are_applied_and_recorded(coco, tmp_path):
    center, pad = tmp_path / "center", tmp_path / "pad"
    args = ["coco", "--root", coco["root"], "--split", "train", "--resolution", 16, "--limit", 3]
    assert build(*args, "--outdir", center) == 0
    assert build(*args, "--outdir", pad, "--crop", "pad", "--quality", 50) == 0
    assert read_manifest(pad)["settings"]["crop"] == "pad" and read_manifest(pad)["settings"]["quality"] == 50
    extreme = coco["cases"]["extreme_aspect"]  # 400x4: padded, it is a thin band in black
    assert build("coco", "--root", coco["root"], "--split", "train", "--resolution", 16, "--crop", "pad",
                 "--outdir", tmp_path / "all_pad") == 0
    band = {int(k): e for _, k, e in all_samples(tmp_path / "all_pad")}[extreme]
    pixels = np.asarray(decode(band["jpg"]))
    assert pixels[0].max() < 30 and pixels[-1].max() < 30  # top and bottom rows are padding
    assert [k for _, k, _ in all_samples(center)] == [k for _, k, _ in all_samples(pad)]
    assert all(a[2]["jpg"] != b[2]["jpg"] for a, b in zip(all_samples(center), all_samples(pad)))


def test_feature_flags_store_float16_features_and_record_the_models(tmp_path):
    import torch
    from tiny_models import register_tiny_clip, tiny_clip_weights, tiny_resnet_weights

    from textgan.data.decode import decode_jpeg, to_float_image
    from textgan.encoders import load_clip
    from textgan.files import sha256_file

    clip_name, clip_file = register_tiny_clip(), tiny_clip_weights(tmp_path)
    resnet_file = tiny_resnet_weights(tmp_path)
    out = tmp_path / "out"
    assert build("shapes", "--outdir", out, "--n", 5, "--resolution", 32, "--clip-model", clip_name,
                 "--clip-pretrained", clip_file, "--perceptual", "resnet18", "--perceptual-weights", resnet_file,
                 "--feature-batch-size", 2) == 0
    features = read_manifest(out)["settings"]["features"]
    assert features["clip"]["model"] == clip_name and features["clip"]["weights_sha256"] == sha256_file(clip_file)
    assert features["perceptual"]["arch"] == "resnet18"
    assert features["perceptual"]["weights_sha256"] == sha256_file(resnet_file)
    samples = all_samples(out)
    assert len(samples) == 5
    clip = load_clip(clip_name, clip_file)
    for _, _, entries in samples:
        n_captions = len(json.loads(entries["json"])["captions"])
        arrays = {k: np.load(io.BytesIO(entries[k])) for k in fmt.FEATURE_KEYS}
        assert arrays[fmt.KEY_CLIP_IMG].shape == (64,) and arrays[fmt.KEY_CLIP_TXT].shape == (n_captions, 64)
        assert arrays[fmt.KEY_PERCEPTUAL].shape == (512,)
        assert all(a.dtype == np.float16 for a in arrays.values())
        # The stored embedding is that of the stored JPEG.
        with torch.no_grad():
            again = clip.encode_images(to_float_image(decode_jpeg(entries["jpg"]))[None])[0].numpy()
        np.testing.assert_allclose(arrays[fmt.KEY_CLIP_IMG].astype(np.float32), again, rtol=2e-3, atol=2e-3)


@pytest.mark.filterwarnings("ignore:perceptual net 'resnet18' has RANDOM weights")
def test_random_feature_weights_are_seeded_so_reruns_match(tmp_path):
    args = ["shapes", "--n", 2, "--resolution", 16, "--perceptual", "resnet18", "--perceptual-random-weights"]
    assert build(*args, "--outdir", tmp_path / "a") == 0 and build(*args, "--outdir", tmp_path / "b") == 0
    assert read_bytes(tmp_path / "a" / "train-000000.tar") == read_bytes(tmp_path / "b" / "train-000000.tar")
    assert read_manifest(tmp_path / "a")["settings"]["features"]["perceptual"]["random_weights"] is True
