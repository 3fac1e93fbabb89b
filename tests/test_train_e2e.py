"""The main job end to end: launchers/submit.py --local trains, writes a run directory, resumes exactly.

Real components throughout: shapes shards, submitit's local executor, DeepSpeed engines (gloo, CPU),
TensorBoard events. Tiny networks and a few iterations keep it to seconds per run.
"""

import json
import os
import subprocess
import sys

import pytest

from textgan.data.building.builder import BuildConfig, build
from textgan.files import read_jsonl
from textgan.train.stats import is_deterministic_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBMIT = os.path.join(ROOT, "launchers", "submit.py")

# StyleGAN2, the architecture of the real recipes (the demo recipe itself uses the cgan baseline;
# tests/test_train_multirank.py runs that one).
TINY = [
    "model.arch=stylegan2", "data.resolution=16", "data.build_shapes_if_missing=0", "data.num_workers=0",
    "model.channel_base=512", "model.channel_max=32", "model.z_dim=16", "model.w_dim=16", "model.mapping_layers=1",
    "schedule.batch_size=8", "schedule.batch_gpu=4", "schedule.kimg_per_tick=0.016",
    "schedule.D_reg_interval=2", "schedule.image_snapshot_ticks=1", "schedule.network_snapshot_ticks=1",
    "schedule.ema_kimg=0.01",
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shards") / "shapes16")
    build(BuildConfig(source="shapes", out=out, resolution=16, n=128, samples_per_shard=32, workers=1, progress=False))
    return out


def submit(*args, outdir, shards, total_kimg):
    sets = [x for kv in TINY + [f"data.shards={shards}", f"schedule.total_kimg={total_kimg}"] for x in ("--set", kv)]
    cmd = [sys.executable, SUBMIT, "--local", "--config", os.path.join(ROOT, "configs", "demo.yaml"),
           "--outdir", str(outdir), *sets, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def stats_lines(run_dir):
    return read_jsonl(os.path.join(run_dir, "stats.jsonl"))


def deterministic(line):
    return {k: v for k, v in line.items() if is_deterministic_key(k) and k != "timestamp"}


@pytest.mark.slow
@pytest.mark.multiproc
def test_demo_job_produces_a_complete_run_directory(tmp_path, shards):
    proc = submit(outdir=tmp_path, shards=shards, total_kimg=0.032)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "00000-demo"
    assert f"run_dir:          {run_dir}" in proc.stdout
    assert f"best_checkpoint:  {run_dir / 'best' / 'shapes_alignment'}" in proc.stdout  # the metric's best snapshot
    assert "shapes_alignment:" in proc.stdout and "tensorboard --logdir" in proc.stdout

    lines = stats_lines(run_dir)
    assert [line["Progress/kimg"]["mean"] for line in lines] == [0.016, 0.032]
    assert all(line["Loss/G/adv"]["num"] > 0 and line["Loss/D/adv_real"]["num"] > 0 for line in lines)
    assert lines[0]["Loss/D/r1"]["num"] > 0  # lazy R1 ran (D_reg_interval=2)
    files = set(os.listdir(run_dir))
    # grids are tagged by images, like checkpoints: one per snapshot even within one kimg
    assert {"config.yaml", "run.json", "fakes000000.016.png", "fakes000000.032.png"} <= files
    assert any(f.startswith("events.out.tfevents") for f in files)
    run_info = json.loads((run_dir / "run.json").read_text())
    assert any("random" in w.lower() for w in run_info["warnings"])  # random text tower is recorded loudly
    ckpts = run_dir / "checkpoints"
    complete = [d for d in os.listdir(ckpts) if (ckpts / d / "COMPLETE").exists()]
    assert complete, os.listdir(ckpts)
    # what a monitor reads without Slurm: the last heartbeat and the attempt's start and end
    heartbeat = json.loads((run_dir / "heartbeat.json").read_text())
    assert (heartbeat["phase"], heartbeat["kimg"], heartbeat["tick"], heartbeat["attempt"]) == ("finished", 0.032, 2, 1)
    attempts = [json.loads(line) for line in (run_dir / "attempts.jsonl").read_text().splitlines()]
    assert [(a["event"], a["attempt"], a.get("outcome")) for a in attempts] == [("start", 1, None),
                                                                                ("end", 1, "completed")]
    assert attempts[1]["kimg"] == 0.032 and attempts[0]["job_id"] == heartbeat["job_id"] is not None
    from monitor_util import monitor_row

    row = monitor_row(run_dir)  # the monitor's view of the finished --local run
    assert (row["kimg"], row["total_kimg"], row["progress"], row["tick"], row["eta_sec"]) == (0.032, 0.032, 1.0, 2, 0.0)
    assert [a["outcome"] for a in row["attempts"]] == ["completed"] and row["heartbeat"]["phase"] == "finished"
    assert "shapes_alignment" in row["metrics"]
    assert (row["job"]["source"], row["job"]["state"], row["health"]["state"]) == ("local", "COMPLETED", "OK")
    submitted = json.loads((run_dir / "submissions.jsonl").read_text())
    assert (submitted["executor"], submitted["job_id"]) == ("local", row["job"]["id"])
    seconds = attempts[1]["unix"] - attempts[0]["unix"]  # CPU core-hours from the attempt's own record
    assert row["usage"]["source"] == "attempts" and row["usage"]["unit"] == "cpu_core_hours"
    assert row["usage"]["cpu_core_hours"] == pytest.approx(seconds * attempts[0]["cpus"] / 3600, rel=1e-4)
    assert attempts[0]["cpus"] == len(os.sched_getaffinity(0)) and attempts[0]["world_size"] == 1

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert len(events.Scalars("Loss/G/adv")) == 2


@pytest.mark.slow
@pytest.mark.multiproc
def test_stop_after_a_tick_and_resume_reproduces_the_uninterrupted_stats(tmp_path, shards):
    whole = submit(outdir=tmp_path / "whole", shards=shards, total_kimg=0.048)
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = submit(outdir=tmp_path / "split", shards=shards, total_kimg=0.016)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "split" / "00000-demo"
    second = submit("--resume", str(run_dir), outdir=tmp_path / "split", shards=shards, total_kimg=0.048)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout

    expected = [deterministic(line) for line in stats_lines(tmp_path / "whole" / "00000-demo")]
    got = [deterministic(line) for line in stats_lines(run_dir)]
    assert len(got) == len(expected) == 3
    assert got == expected  # bitwise: losses, R1, counts, for the ticks after the resume too


def test_dry_run_prints_the_resolved_config_and_submits_nothing(tmp_path, shards):
    proc = submit("--dry-run", outdir=tmp_path, shards=shards, total_kimg=1)
    assert proc.returncode == 0, proc.stderr
    assert "resolution: 16" in proc.stdout and "gradient accumulation 2" in proc.stdout
    assert not os.path.exists(tmp_path / "00000-demo")


@pytest.mark.parametrize("override, message", [
    ("schedule.totl_kimg=3", "Did you mean 'schedule.total_kimg'"),
    ("data.resolution=32", "built at 16 px"),
    ("schedule.batch_gpu=3", "multiple of"),
    ("text_encoder.random_weights=false", "text_encoder.pretrained"),
    ("text_encoder.model=ViT-B-99", "not an open_clip model"),
    ("text_encoder.pretrained=/nonexistent/clip.pt", "does not exist"),
])
def test_invalid_requests_exit_2_before_any_run_directory_exists(tmp_path, shards, override, message):
    proc = submit("--set", override, outdir=tmp_path, shards=shards, total_kimg=1)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert not os.path.exists(tmp_path) or not os.listdir(tmp_path)
