"""`textgan eval` on a real checkpoint of a tiny training run (submitit local, DeepSpeed on gloo)."""

import json

import pytest
from metrics_fixture import register_tiny_extractor
from test_train_e2e import shards, submit  # noqa: F401  (shards is a fixture: 16-px shapes train shards)
from tiny_models import register_tiny_clip, tiny_clip_weights

from textgan import eval_cli
from textgan.data.building.builder import BuildConfig, build


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shards):  # noqa: F811
    outdir = tmp_path_factory.mktemp("runs")
    proc = submit(outdir=outdir, shards=shards, total_kimg=0.016)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return outdir / "00000-demo"


@pytest.fixture(scope="module")
def val_shards(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("val") / "shapes16-val")
    build(BuildConfig(source="shapes", split="val", out=out, resolution=16, n=48, samples_per_shard=16, workers=1,
                      progress=False))
    return out


def _eval(capsys, *args):
    code = eval_cli.main([str(a) for a in args])
    return code, capsys.readouterr()


def _common(tmp_path, val_shards):
    return ["--reference", val_shards, "--feature-extractor", register_tiny_extractor(),
            "--clip-model", register_tiny_clip(), "--clip-pretrained", tiny_clip_weights(tmp_path),
            "--cache-dir", tmp_path / "cache", "--batch-size", 16, "--device", "cpu",
            "--diversity-captions", 8, "--diversity-samples", 3]


METRICS = "fid32,kid32,fid32_train,clip_score16,diversity,shapes_alignment16"


@pytest.mark.slow
@pytest.mark.multiproc
def test_eval_measures_a_checkpoint_and_its_export_alike(run_dir, val_shards, tmp_path, capsys):
    code, out = _eval(capsys, run_dir, "--metrics", METRICS, *_common(tmp_path, val_shards))
    assert code == 0, out.err
    lines = out.out.splitlines()
    assert lines[1].split()[:2] == ["metric", "value"] and len(lines) >= 2 + 6
    values = {}
    for name in METRICS.split(","):
        records = [json.loads(x) for x in (run_dir / f"metric-{name}.jsonl").read_text().splitlines()]
        assert len(records) == 1 and records[0]["metric"] == name and records[0]["kimg"] == pytest.approx(0.016) and records[0]["tick"] == 1
        assert records[0]["snapshot"] == str(run_dir / "checkpoints" / "000000.016")
        values[name] = records[0]["value"]
        assert any(line.startswith(name + " ") and f"{values[name]:.4f}" in line for line in lines), name
    assert values["fid32"] > 0 and values["fid32_train"] > 0 and 0 < values["diversity"] <= 1
    fid = json.loads((run_dir / "metric-fid32.jsonl").read_text())["protocol"]
    assert fid["reference"]["shards"] == val_shards and fid["leakage"]["checked"]  # vs the run's data.shards
    assert fid["leakage"]["train_shards"] == _train_shards(run_dir) and fid["leakage"]["n_ids"] == 0

    from textgan import cli

    exported = tmp_path / "G.pt"
    assert cli.main(["export", str(run_dir), "--out", str(exported)]) == 0
    code, out = _eval(capsys, exported, "--metrics", "fid32,diversity", "--train-shards", _train_shards(run_dir),
                      *_common(tmp_path, val_shards))
    assert code == 0, out.err
    for name in ("fid32", "diversity"):
        again = json.loads((tmp_path / f"metric-{name}.jsonl").read_text())
        assert again["value"] == pytest.approx(values[name], rel=1e-6, abs=1e-9), name


def _train_shards(run_dir):
    from textgan.config import load_config

    return str(load_config(str(run_dir / "config.yaml")).data.shards)


@pytest.mark.slow
@pytest.mark.multiproc
def test_eval_errors_exit_2_and_name_the_problem(run_dir, val_shards, tmp_path, capsys, tmp_path_factory):
    common = _common(tmp_path, val_shards)
    code, out = _eval(capsys, tmp_path / "nope", "--metrics", "fid32", *common)
    assert code == 2 and "does not exist" in out.err
    code, out = _eval(capsys, run_dir, "--metrics", "fid", *common)
    assert code == 2 and "needs a sample count" in out.err
    code, out = _eval(capsys, run_dir, *common, "--metrics", "")
    assert code == 2 and "pass --metrics" in out.err
    code, out = _eval(capsys, run_dir, *common)  # without --metrics: the run's own (the demo's shapes_alignment)
    assert code == 0 and out.out.splitlines()[2].startswith("shapes_alignment "), out.err
    big = str(tmp_path_factory.mktemp("val32") / "shapes32-val")
    build(BuildConfig(source="shapes", split="val", out=big, resolution=32, n=16, samples_per_shard=16, workers=1,
                      progress=False))
    code, out = _eval(capsys, run_dir, "--metrics", "fid16", *common, "--reference", big)
    assert code == 2 and "G makes 16 px images" in out.err and "32 px" in out.err
    code, out = _eval(capsys, run_dir, "--metrics", "fid16", *common, "--feature-extractor", "inception-v3-compat",
                      "--feature-extractor-weights", tmp_path / "missing.pth")
    assert code == 2 and "missing.pth does not exist" in out.err
