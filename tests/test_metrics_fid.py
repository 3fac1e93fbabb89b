"""FID / KID / IS through torch-fidelity: known values on known images, equal to torch-fidelity's own
calculate_metrics, recorded with their protocol; missing Inception weights give a clear error."""


import numpy as np
import pytest
import torch
import torch_fidelity
from metrics_fixture import (
    LookupGenerator,
    encode_ids,
    metrics_config,
    register_tiny_extractor,
    single_runtime,
    write_sets,
)

from textgan.errors import UsageError
from textgan.files import read_jsonl
from textgan.metrics import MetricEvaluator
from textgan.metrics.extractor import Extractor, default_inception_weights
from textgan.metrics.generation import to_uint8
from textgan.metrics.reference import captions_for, select


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    return (root,) + write_sets(root)


def evaluator(sets, metrics, run_dir=None, **changes):
    root, val_dir, _, train_dir, _ = sets
    cfg = metrics_config(root, val_dir, train_dir, metrics, **changes)
    return MetricEvaluator(cfg, runtime=single_runtime(), run_dir=run_dir, log=lambda *a: None)


def test_fid_of_the_reference_against_itself_is_zero_and_grows_with_a_shift(sets):
    _, _, val, _, _ = sets
    from metrics_fixture import VAL_IDS

    ev = evaluator(sets, ["fid64", "kid64"])
    fids, kids = [], []
    for shift in (0.0, 0.05, 0.1, 0.2, 0.4):
        report = ev.run(LookupGenerator(VAL_IDS, val, shift=shift), encode_ids)
        fids.append(report["fid64"].value)
        kids.append(report["kid64"].value)
    assert abs(fids[0]) < 1e-9, fids
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    # KID is an unbiased estimate: ~0 (either sign) for one distribution, then growing with the shift
    assert abs(kids[0]) < 0.02 * kids[-1] and all(a < b for a, b in zip(kids[1:], kids[2:])), kids
    assert fids[-1] > 5 * fids[1]  # a clear effect, not noise


def _images_as_torch_fidelity_sees_them(sets, shift, n):
    """The same uint8 fakes and reals, made without textgan.metrics' generation and reading code."""
    _, _, val, _, _ = sets
    from metrics_fixture import VAL_IDS

    from textgan.metrics.reference import load_index

    root, val_dir = sets[0], sets[1]
    index = load_index(val_dir, str(root / "cache"))
    positions = select(index, n, 0)
    row = {int(i): k for k, i in enumerate(VAL_IDS)}
    reals = torch.from_numpy(val[[row[index.ids[p]] for p in positions]]).permute(0, 3, 1, 2).contiguous()
    G = LookupGenerator(VAL_IDS, val, shift=shift)
    fakes = to_uint8(G(torch.zeros(n, 8), encode_ids(captions_for(index, positions, n))))
    return fakes, reals


class _Images(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def test_values_equal_torch_fidelity_calculate_metrics_on_the_same_images(sets):
    _, _, val, _, _ = sets
    from metrics_fixture import VAL_IDS

    ev = evaluator(sets, ["fid64", "kid64", "is64"], kid_subset_size=32, kid_subsets=20, isc_splits=4)
    report = ev.run(LookupGenerator(VAL_IDS, val, shift=0.3), encode_ids)
    fakes, reals = _images_as_torch_fidelity_sees_them(sets, 0.3, 64)
    theirs = torch_fidelity.calculate_metrics(
        input1=_Images(fakes), input2=_Images(reals), cuda=False, fid=True, kid=True, isc=True,
        feature_extractor=register_tiny_extractor(), kid_subset_size=32, kid_subsets=20, isc_splits=4,
        batch_size=16, verbose=False, cache=False, save_cpu_ram=True)
    assert report["fid64"].value == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    assert report["kid64"].value == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5)
    assert report["kid64"].results["std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-3)
    assert report["is64"].value == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    assert report["fid64"].value > 0.01


def test_results_record_their_protocol_and_timing_in_jsonl(sets, tmp_path):
    _, _, val, _, _ = sets
    from metrics_fixture import TRAIN_IDS, VAL_IDS

    ev = evaluator(sets, ["fid32", "kid32", "fid32_train"], run_dir=str(tmp_path))
    # fid32_train draws its captions from the training shards: the lookup G draws val pictures for them
    G = LookupGenerator(np.concatenate([VAL_IDS, TRAIN_IDS]), np.concatenate([val, val[:len(TRAIN_IDS)]]), shift=0.2)
    for kimg in (1.0, 2.0):
        report = ev.run(G, encode_ids, kimg=kimg, tick=int(kimg), snapshot=f"{int(kimg):06d}")
    lines = read_jsonl(tmp_path / "metric-fid32.jsonl")
    assert [x["kimg"] for x in lines] == [1.0, 2.0] and lines[1]["snapshot"] == "000002"
    assert lines[0]["value"] == pytest.approx(report["fid32"].value)
    p = lines[0]["protocol"]
    assert p["reference_set"] == "val" and p["reference"]["shards"] == sets[1] and p["num_samples"] == 32
    assert p["reference"]["manifest_sha256"] and p["extractor"]["state_sha256"] and p["real_images"] == 32
    assert p["libraries"]["torch-fidelity"] == torch_fidelity.__version__ and "resiz" in p["resizing"]
    assert p["leakage"]["checked"] and p["leakage"]["n_ids"] == 0 and p["leakage"]["n_bytes"] == 0
    assert p["real_features_cached"] is False and lines[1]["protocol"]["real_features_cached"] is True
    assert report["fid32"].shared_with == ("kid32",) and report["fid32"].images_per_sec > 0
    assert report.seconds >= report["fid32"].seconds > 0
    assert report.scalars().keys() == {"Metrics/fid32", "Metrics/kid32", "Metrics/fid32_train"}
    train = read_jsonl(tmp_path / "metric-fid32_train.jsonl")[0]
    assert train["protocol"]["reference_set"] == "train" and train["protocol"]["reference"]["shards"] == sets[3]
    assert train["protocol"]["leakage"]["checked"] is False
    assert train["value"] > 1e-3  # val pictures against train pictures: a real distance


def test_missing_inception_weights_name_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(UsageError, match="never downloads") as info:
        Extractor("inception-v3-compat")
    assert default_inception_weights() in str(info.value) and "feature_extractor_weights" in str(info.value)
    with pytest.raises(UsageError, match="does not exist"):
        Extractor("inception-v3-compat", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(UsageError, match="downloads its weights"):
        Extractor("vgg16")
    with pytest.raises(UsageError, match="unknown feature extractor 'incepton'"):
        Extractor("incepton")


def test_a_val_metric_without_reference_shards_says_what_to_set(sets):
    ev = evaluator(sets, ["fid32"], reference=None)
    with pytest.raises(UsageError, match="set metrics.reference"):
        ev.prepare()
