"""Every check runs before a job exists, --dry-run included: a bad value exits 2 naming the key and its
allowed range, and nothing is created (no run directory, no shards built).

The launchers' main() runs in this process (tests/launcher_util.py). Submissions that are not --dry-run
run with a PATH without sbatch, so that nothing could ever reach a real cluster: were a check missing,
the submission would stop at "sbatch/srun not found" instead, and the test would fail on the message."""

import math
import os

import pytest

from launcher_util import created, run_main, submit_launcher, sweep_launcher
from test_train_e2e import ROOT, TINY, shards  # noqa: F401  (shards is a fixture)
from textgan.config import CHOICES, RANGES, load_config, numeric_keys
from textgan.errors import UsageError
from textgan.metrics.config import METRICS_RANGES

DEMO = os.path.join(ROOT, "configs", "demo.yaml")


@pytest.fixture
def no_sbatch(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


# ------------------------------------------------------------------ the config's numeric keys


def test_every_numeric_config_key_has_an_allowed_range():
    ranged = set(RANGES) | {f"metrics.{k}" for k in METRICS_RANGES}
    special = {"data.resolution"} | {k for k in CHOICES if k in numeric_keys()}  # powers of two; ZeRO stages
    assert set(numeric_keys()) == ranged | special
    assert not ranged & special


def _outside(allowed):
    """A value just outside the range (an int where the bounds are ints)."""
    if allowed.high != math.inf:
        return allowed.high + 1
    return allowed.low if allowed.low_open else allowed.low - 1


TABLE = sorted(RANGES.items()) + sorted((f"metrics.{k}", r) for k, r in METRICS_RANGES.items())


@pytest.mark.parametrize("key, allowed", TABLE, ids=[k for k, _ in TABLE])
def test_each_key_refuses_values_outside_its_range_and_names_both(key, allowed):
    kind = numeric_keys()[key]
    bad = [_outside(allowed)] + ([math.nan, math.inf, -math.inf] if kind is float else [])
    for value in bad:
        text = value if isinstance(value, int) or math.isfinite(value) else str(value).replace("inf", ".inf")
        with pytest.raises(UsageError) as info:
            load_config(DEMO, [f"{key}={text}"])
        message = str(info.value)
        assert key in message and str(allowed).split(" (")[0] in message, (value, message)


def test_betas_must_be_two_numbers_below_one():
    for betas in ("[0.0,1.0]", "[-0.1,0.99]", "[0.0,.nan]", "[0.5]"):
        with pytest.raises(UsageError, match="optim.betas.*from 0 to below 1"):
            load_config(DEMO, [f"optim.betas={betas}"])


def test_a_yaml_file_that_is_not_a_mapping_is_a_usage_error(tmp_path):
    for text in ("- data\n- model\n", "[1, 2]\n"):
        path = tmp_path / "cfg.yaml"
        path.write_text(text)
        with pytest.raises(UsageError, match="must hold a mapping of config sections"):
            load_config(str(path))


# ------------------------------------------------------------------ submit.py: refused before anything exists

# (arguments, what the message must contain): the values a fault campaign found failing only inside the job
BAD_SUBMISSIONS = [
    (["--set", "schedule.total_kimg=nan"], ["'schedule.total_kimg'", "a finite number > 0"]),
    (["--set", "schedule.image_snapshot_ticks=0"], ["'schedule.image_snapshot_ticks'", ">= 1"]),
    (["--set", "schedule.network_snapshot_ticks=0"], ["'schedule.network_snapshot_ticks'", ">= 1"]),
    (["--set", "schedule.keep_checkpoints=0"], ["'schedule.keep_checkpoints'", ">= 1"]),
    (["--set", "optim.G_lr=-1"], ["'optim.G_lr'", ">= 0"]),
    (["--set", "data.num_workers=-1"], ["'data.num_workers'", ">= 0"]),
    (["--set", "data.max_skip_rate=2"], ["'data.max_skip_rate'", "from 0 to 1"]),
    (["--set", "seed=-1"], ["'seed'", "from 0 to 4294967295"]),
    (["--set", "dist.num_threads=-1"], ["'dist.num_threads'", ">= 1"]),
    (["--set", "loss.r1_gamma=.inf"], ["'loss.r1_gamma'", "a finite number >= 0"]),
    (["--set", "loss.r2_gamma=-1"], ["'loss.r2_gamma'", ">= 0"]),
    (["--set", "loss.kind=wgan"], ["'loss.kind'", "allowed: nonsaturating, hinge, rpgan"]),
    (["--init-from", "no/such/checkpoint"], ["--init-from no/such/checkpoint", "no such file or directory"]),
    (["--resume", "no/such/run"], ["--resume no/such/run", "neither a run directory"]),
    (["--set", "text_encoder.model=ViT-Nope"], ["'text_encoder.model'", "not an open_clip model"]),
]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "submit"])
@pytest.mark.parametrize("args, expected", BAD_SUBMISSIONS, ids=[" ".join(a) for a, _ in BAD_SUBMISSIONS])
def test_bad_values_exit_2_naming_key_and_range_and_create_nothing(tmp_path, capsys, no_sbatch, args, expected,
                                                                    dry_run):
    demo_shards = tmp_path / "shapes32"  # missing: the demo would build them on first use
    argv = ["--config", DEMO, "--outdir", str(tmp_path / "runs"), "--set", f"data.shards={demo_shards}", *args]
    code, out, err = run_main(submit_launcher, argv + (["--dry-run"] if dry_run else []), capsys)
    assert code == 2, (out, err)
    assert all(text in err for text in expected), err
    assert created(tmp_path / "runs") == [] and not demo_shards.exists()


def test_a_config_file_that_is_a_list_exits_2(tmp_path, capsys):
    path = tmp_path / "list.yaml"
    path.write_text("- data\n- model\n")
    code, _, err = run_main(submit_launcher, ["--config", str(path), "--outdir", str(tmp_path / "runs"), "--dry-run"],
                            capsys)
    assert code == 2 and "must hold a mapping" in err and "Traceback" not in err


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "submit"])
def test_local_gpus_that_this_machine_lacks_are_refused(tmp_path, capsys, shards, dry_run):  # noqa: F811
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    sets = [x for kv in TINY + [f"data.shards={shards}", "schedule.total_kimg=0.016"] for x in ("--set", kv)]
    argv = ["--config", DEMO, "--outdir", str(tmp_path / "runs"), "--local", "--gpus-per-node", "1", *sets]
    code, out, err = run_main(submit_launcher, argv + (["--dry-run"] if dry_run else []), capsys)
    assert code == 2, (out, err)
    assert "--gpus-per-node 1 with --local" in err and "0 CUDA GPU(s)" in err
    assert created(tmp_path / "runs") == []


def test_dry_run_checks_the_shards_it_does_not_build(tmp_path, capsys, shards):  # noqa: F811
    # missing demo shards: checked as they will be built, and not built
    demo_shards = tmp_path / "shapes32"
    argv = ["--config", DEMO, "--outdir", str(tmp_path / "runs"), "--set", f"data.shards={demo_shards}", "--dry-run"]
    code, out, err = run_main(submit_launcher, argv, capsys)
    assert code == 0, err
    assert f"# data: {demo_shards} has no shards yet; the submission builds 20000" in out
    assert not demo_shards.exists() and created(tmp_path / "runs") == []
    # existing shards built at another resolution (16 px) than the config's (32): refused under --dry-run too
    argv = ["--config", DEMO, "--outdir", str(tmp_path / "runs"), "--set", f"data.shards={shards}", "--dry-run"]
    code, out, err = run_main(submit_launcher, argv, capsys)
    assert code == 2 and "'data.resolution' is 32" in err and "16 px" in err
    # precomputed features the shards do not have
    code, out, err = run_main(submit_launcher, argv[:-1] + ["--set", "data.resolution=16", "--set",
                                                            "contrastive.precomputed=require", "--dry-run"], capsys)
    assert code == 2 and "contrastive.precomputed=require" in err


# ------------------------------------------------------------------ sweep.py: the same checks for every point


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "submit"])
@pytest.mark.parametrize("swept, message", [
    ("data.max_skip_rate: [0.5, 2]", "'data.max_skip_rate' must be from 0 to 1"),
    ("text_encoder.model: [textgan-demo-clip, ViT-Nope]", "not an open_clip model"),
])
def test_every_sweep_point_passes_the_checks_before_anything_exists(tmp_path, capsys, no_sbatch, shards,  # noqa: F811
                                                                    swept, message, dry_run):
    grid = tmp_path / "g.yaml"
    grid.write_text(f"grid:\n  {swept}\n")
    sets = [x for kv in TINY + [f"data.shards={shards}"] for x in ("--set", kv)]
    argv = ["--config", DEMO, "--grid", str(grid), "--outdir", str(tmp_path / "runs"), *sets]
    code, out, err = run_main(sweep_launcher, argv + (["--dry-run"] if dry_run else []), capsys)
    assert code == 2, (out, err)
    assert "sweep point 001-" in err and message in err
    assert created(tmp_path / "runs") == []
