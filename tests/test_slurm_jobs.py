"""Training jobs on a real Slurm cluster (tests/slurm/cluster.sh: 4 nodes, accounting through slurmdbd),
submitted exactly as a user does: launchers/submit.py and launchers/sweep.py, then checked through the
files the jobs leave and what sacct reports.

1. 2 nodes x 2 tasks, ZeRO-2: trains, its checkpoint loads; submitit wrote the script --dry-run shows.
2. a preemption (submitit's job._interrupt(): SIGTERM + USR2 to every task) mid-run: every rank saves,
   the job requeues itself, resumes and ends with the stats of an uninterrupted run.
3. a 2-minute time limit does the same by itself (submitted first: it runs while the others do).
4. a sweep of 4 points is one job array; `collect` tabulates it.
5. a cancelled job is reported CANCELLED.
6. a bad config or request never reaches Slurm (sacct knows no such job).
Tiny networks and few images: the file runs in a few minutes on 2 cores.
"""

# ruff: noqa: F811  (pytest fixtures imported from other test modules are redefined as arguments)
import csv
import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest

from monitor_util import monitor_report, monitor_row, sacct_core_hours
from test_requeue import REQUEUE, TOTAL_KIMG, reference  # noqa: F401  (reference is a fixture)
from test_train_e2e import ROOT, SUBMIT, TINY, deterministic, shards, stats_lines  # noqa: F401

from textgan.files import read_jsonl

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.multiproc]

SWEEP = os.path.join(ROOT, "launchers", "sweep.py")
DEMO = os.path.join(ROOT, "configs", "demo.yaml")
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
# The time-limit job: Slurm sends the USR2 warning of a 2-minute limit 30-90 s before the end, which leaves
# ~15-75 s of training per attempt. The job trains at 8-11 s/kimg on a quiet 2-core machine (so 12 kimg outlasts
# the first warning) and at ~28-45 s/kimg on a slower day or beside this module's other jobs (~2 kimg per
# attempt: 12 kimg then takes ~6 attempts, within the requeue budget and the wait below).
TIMELIMIT_KIMG = 12
TIMELIMIT_REQUEUES = 10
TIMELIMIT = TINY + ["schedule.kimg_per_tick=1", f"schedule.total_kimg={TIMELIMIT_KIMG}",
                    "schedule.image_snapshot_ticks=100",
                    "schedule.network_snapshot_ticks=100", "dist.num_threads=1"]


def sets(overrides):
    return [x for kv in overrides for x in ("--set", kv)]


def submit(*args, outdir, timeout=600):
    cmd = [sys.executable, SUBMIT, "--config", DEMO, "--outdir", str(outdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def job_id_of(stdout: str) -> str:
    match = re.search(r"submitted job (?:array )?(\d+)", stdout)
    assert match, stdout
    return match.group(1)


def sacct_states(job_id: str) -> dict:
    """{JobID: State} of a job (an array: each task) as accounting has it; {} when unknown."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job_id], capture_output=True,
                         text=True, timeout=30).stdout
    return {j: s.split()[0] for j, s in (line.split("|", 1) for line in out.splitlines() if "|" in line)}


def wait_final(job_id: str, count: int = 1, timeout: float = 400) -> dict:
    """Poll sacct until `count` entries of the job are in a final state; returns {JobID: State}."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = sacct_states(job_id)
        done = {j: s for j, s in states.items() if s in FINAL and "[" not in j}
        if len(done) >= count:
            return done
        time.sleep(2)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {sacct_states(job_id)}")


def wait_for_text(path: str, text: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not (os.path.exists(path) and text in open(path).read()):
        assert time.time() < deadline, f"{path} does not say {text!r} after {timeout} s"
        time.sleep(0.2)


def the_run_dir(outdir) -> str:
    runs = [d for d in os.listdir(outdir) if not d.startswith(".")]
    assert len(runs) == 1, runs
    return os.path.join(str(outdir), runs[0])


@pytest.fixture(scope="module")
def timelimit_job(slurm_cluster, shards, tmp_path_factory):
    """Submitted by the first test that asks for it; checked by the last test of the file."""
    outdir = tmp_path_factory.mktemp("timelimit")
    proc = submit("--time", "2", "--signal-delay", "30", "--max-requeues", str(TIMELIMIT_REQUEUES),
                  *sets(TIMELIMIT + [f"data.shards={shards}"]), outdir=outdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return job_id_of(proc.stdout), the_run_dir(outdir)


def test_two_nodes_two_tasks_each_train_with_zero2_and_the_checkpoint_loads(slurm_cluster, timelimit_job, shards,
                                                                           tmp_path):
    overrides = TINY + [f"data.shards={shards}", "schedule.batch_gpu=2", "schedule.kimg_per_tick=0.008",
                        "schedule.total_kimg=0.016", "schedule.image_snapshot_ticks=100", "dist.num_threads=1",
                        "dist.zero_stage_G=2", "dist.zero_stage_D=2"]
    request_args = ["--nodes", "2", "--tasks-per-node", "2", "--time", "10", "--signal-delay", "60"]
    proc = submit(*request_args, "--wait", *sets(overrides), outdir=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "training finished" in proc.stdout and "on 4 rank(s)" in proc.stdout
    job_id, run_dir = job_id_of(proc.stdout), the_run_dir(tmp_path)
    assert wait_final(job_id) == {job_id: "COMPLETED"}

    # two nodes (hosts of their own in the test cluster), a log per rank
    nodes = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "NodeList", "-j", job_id], capture_output=True,
                           text=True, timeout=30).stdout.split()
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodes[0]], capture_output=True, text=True,
                           timeout=30).stdout.split()
    assert len(hosts) == 2, nodes
    logs = os.path.join(run_dir, "logs")
    assert all(os.path.getsize(os.path.join(logs, f"{job_id}_{rank}_log.err")) > 0 for rank in range(4))

    # the batch script submitit wrote is the one --dry-run renders
    import argparse

    from textgan.launch.slurm import add_slurm_arguments, render_sbatch, slurm_request

    parser = argparse.ArgumentParser()
    add_slurm_arguments(parser)
    request = slurm_request(parser.parse_args(request_args + ["--job-name", "textgan-demo"]))
    with open(os.path.join(logs, f"{job_id}_submission.sh")) as f:
        assert f.read() == render_sbatch(request, logs)

    from textgan.train.checkpoint import find_latest, load_weights

    ckpt = find_latest(os.path.join(run_dir, "checkpoints"))
    marker = json.load(open(os.path.join(ckpt, "COMPLETE")))
    assert (marker["world_size"], marker["G_stage"], marker["D_stage"]) == (4, 2, 2)
    assert sorted(f for f in os.listdir(ckpt) if f.startswith("rank")) == [f"rank{r:05d}.pt" for r in range(4)]
    weights = load_weights(ckpt)
    assert all(len(weights[k]) > 0 for k in ("G", "D", "G_ema"))
    assert all(bool(t.isfinite().all()) for t in weights["G_ema"].values())
    assert [line["Progress/kimg"]["mean"] for line in stats_lines(run_dir)] == [0.008, 0.016]

    # textgan monitor: completed on 2 nodes x 2 tasks, one attempt, core-hours as accounting has them
    row = monitor_row(run_dir)
    assert (row["job"]["id"], row["job"]["state"]) == (job_id, "COMPLETED")
    assert (row["job"]["nodes"], row["job"]["tasks"]) == (2, 4)
    assert row["health"]["state"] == "OK" and row["progress"] == 1.0
    assert [(a["attempt"], a["outcome"], a["state"], a["world_size"]) for a in row["attempts"]] == [
        (1, "completed", "COMPLETED", 4)]
    assert row["usage"]["cpu_core_hours"] == pytest.approx(sacct_core_hours(job_id), abs=1e-6)
    assert row["usage"]["cpu_core_hours"] > 0


def test_a_preempted_two_node_job_checkpoints_requeues_and_ends_with_the_uninterrupted_stats(
        slurm_cluster, shards, reference, tmp_path):
    import submitit

    overrides = REQUEUE + [f"data.shards={shards}", f"schedule.total_kimg={TOTAL_KIMG}"]
    # a limit over 10 minutes: below that, submitit takes every USR2 for a time-out, not a preemption
    proc = submit("--nodes", "2", "--tasks-per-node", "1", "--time", "30", "--signal-delay", "60",
                  *sets(overrides), outdir=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id, run_dir = job_id_of(proc.stdout), the_run_dir(tmp_path)
    wait_for_text(os.path.join(run_dir, "logs", f"{job_id}_0_log.out"), "training stylegan2")  # the loop runs
    submitit.SlurmJob(folder=os.path.join(run_dir, "logs"), job_id=job_id)._interrupt()  # as a preemption does
    assert wait_final(job_id) == {job_id: "COMPLETED"}

    assert [deterministic(line) for line in stats_lines(run_dir)] == reference
    assert [line["requeue"] for line in read_jsonl(os.path.join(run_dir, "requeues.jsonl"))] == [1]
    log = open(os.path.join(run_dir, "logs", f"{job_id}_0_log.out")).read()
    first, second = log.index("==== textgan attempt 1 "), log.index("==== textgan attempt 2 ")
    assert first < log.index("stopped at kimg") < second < log.index("resumed from")  # both attempts' logs kept
    err = open(os.path.join(run_dir, "logs", f"{job_id}_0_log.err")).read()
    assert "this job is preempted" in err

    # textgan monitor: two attempts of one job, the first requeued for a preemption; both instances paid for
    row = monitor_row(run_dir)
    assert (row["job"]["state"], row["health"]["state"]) == ("COMPLETED", "PREEMPTED")
    assert row["health"]["evidence"] == "requeued 1 time: 1 preemption"
    assert [(a["attempt"], a["job_id"], a["outcome"], a["cause"]) for a in row["attempts"]] == [
        (1, job_id, "requeued", "preemption"), (2, job_id, "completed", None)]
    assert row["attempts"][-1]["state"] == "COMPLETED" and row["attempts"][0]["state"] is not None
    assert row["usage"]["cpu_core_hours"] == pytest.approx(sacct_core_hours(job_id), abs=1e-6)
    assert row["usage"]["cpu_core_hours"] > 0


def test_a_cancelled_job_is_reported_cancelled(slurm_cluster, shards, tmp_path):
    import submitit

    proc = submit("--time", "10", "--signal-delay", "60",
                  *sets(TINY + [f"data.shards={shards}", "schedule.total_kimg=100", "dist.num_threads=1"]),
                  outdir=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id, run_dir = job_id_of(proc.stdout), the_run_dir(tmp_path)
    job = submitit.SlurmJob(folder=os.path.join(run_dir, "logs"), job_id=job_id)
    deadline = time.time() + 120
    while sacct_states(job_id).get(job_id) != "RUNNING":
        assert time.time() < deadline, sacct_states(job_id)
        time.sleep(1)
    job.cancel()
    assert wait_final(job_id) == {job_id: "CANCELLED"}
    assert job.state.startswith("CANCELLED")
    row = monitor_row(run_dir)
    assert (row["job"]["state"], row["health"]["state"]) == ("CANCELLED", "CANCELLED")


def test_a_sweep_of_four_points_is_one_job_array_and_collect_tabulates_it(slurm_cluster, shards, tmp_path):
    grid = tmp_path / "lr.yaml"
    grid.write_text("grid:\n  optim.G_lr: [0.001, 0.002]\n  optim.D_lr: [0.001, 0.002]\n")
    overrides = TINY + [f"data.shards={shards}", "schedule.total_kimg=0.016", "schedule.image_snapshot_ticks=100",
                        "dist.num_threads=1"]
    proc = subprocess.run([sys.executable, SWEEP, "--config", DEMO, "--grid", str(grid), "--outdir",
                           str(tmp_path / "runs"), "--max-parallel", "4", "--time", "10", "--signal-delay", "60",
                           *sets(overrides)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    array_id = job_id_of(proc.stdout)
    states = wait_final(array_id, count=4)
    assert states == {f"{array_id}_{i}": "COMPLETED" for i in range(4)}

    sweep_dir = the_run_dir(tmp_path / "runs")
    report = monitor_report(sweep_dir)  # textgan monitor on the sweep: one row per point, its array task
    assert [(r["job"]["id"], r["job"]["state"], r["health"]["state"]) for r in report["runs"]] == [
        (f"{array_id}_{i}", "COMPLETED", "OK") for i in range(4)]
    collected = subprocess.run([sys.executable, SWEEP, "collect", sweep_dir], capture_output=True, text=True,
                               timeout=300, cwd=ROOT)
    assert collected.returncode == 0, collected.stderr
    with open(os.path.join(sweep_dir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["optim.G_lr"], r["optim.D_lr"]) for r in rows] == [
        ("0.001", "0.001"), ("0.001", "0.002"), ("0.002", "0.001"), ("0.002", "0.002")]
    assert all(r["status"] == "COMPLETED" and r["kimg"] == "0.016" for r in rows)
    assert all(r["shapes_alignment/overall best"] for r in rows)
    for i, row in enumerate(rows):  # each point trained in its own run dir, logged under its array index
        assert os.path.exists(os.path.join(sweep_dir, row["point"], "stats.jsonl"))
        assert os.path.exists(os.path.join(sweep_dir, "logs", f"{array_id}_{i}_0_log.out"))


@pytest.mark.parametrize("args, message", [
    (["--set", "schedule.totl_kimg=3"], "Did you mean 'schedule.total_kimg'"),
    (["--time", "1:2:3:4"], "is not a Slurm time limit"),
    (["--nodes", "0"], "--nodes must be >= 1"),
])
def test_a_bad_request_never_reaches_slurm(slurm_cluster, shards, tmp_path, args, message):
    name = f"textgan-bad-{uuid.uuid4().hex[:8]}"
    proc = submit("--job-name", name, *sets(TINY + [f"data.shards={shards}"]), *args, outdir=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stdout + proc.stderr
    assert not os.path.exists(tmp_path) or not os.listdir(tmp_path)
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,JobName", "--name", name, "-S", "now-1hour"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.strip() == ""


def test_a_time_limit_checkpoints_requeues_and_the_job_still_reaches_its_target(slurm_cluster, timelimit_job):
    job_id, run_dir = timelimit_job
    assert wait_final(job_id, timeout=840) == {job_id: "COMPLETED"}
    kimgs = [round(line["Progress/kimg"]["mean"], 3) for line in stats_lines(run_dir)]
    assert kimgs == [float(k) for k in range(1, TIMELIMIT_KIMG + 1)]  # every tick once, up to the target
    requeues = read_jsonl(os.path.join(run_dir, "requeues.jsonl"))
    assert 1 <= len(requeues) <= TIMELIMIT_REQUEUES
    log = open(os.path.join(run_dir, "logs", f"{job_id}_0_log.out")).read()
    assert log.count("stopped at kimg") == len(requeues) and "resumed from" in log
    err = open(os.path.join(run_dir, "logs", f"{job_id}_0_log.err")).read()
    assert "this job is timed-out" in err  # submitit: the USR2 came from the time limit
    row = monitor_row(run_dir)  # textgan monitor: every requeue a time limit, the job then completed
    assert (row["job"]["state"], row["health"]["state"]) == ("COMPLETED", "REQUEUED")
    assert [a["cause"] for a in row["attempts"]] == ["time_limit"] * len(requeues) + [None]
    assert row["health"]["evidence"].startswith(f"requeued {len(requeues)} time")
    assert row["usage"]["cpu_core_hours"] == pytest.approx(sacct_core_hours(job_id), abs=1e-6)


def test_a_search_of_four_prompts_is_one_job_array_and_collect_merges_its_parts(slurm_cluster, tmp_path):
    """`textgan search --array 2` on the real cluster: one job array of 2 tasks through the training launcher,
    each task searching its half of the prompts (round-robin) and writing its part; `collect` merges them."""
    from test_generate import tiny_config, write_run

    run_dir = write_run(tmp_path / "runs" / "00000-tiny", tiny_config("stylegan2"))
    prompts = ["a large yellow triangle in the center", "a small blue triangle on the left",
               "a red circle above a blue square", "a small green diamond at the top"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    proc = subprocess.run([sys.executable, "-m", "textgan", "search", str(run_dir), "--prompts",
                           str(tmp_path / "prompts.txt"), "--scorer", "d", "--population", "8", "--generations", "2",
                           "--keep", "2", "--array", "2", "--time", "10", "--signal-delay", "60", "--outdir",
                           str(tmp_path / "searches")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    array_id = job_id_of(proc.stdout)
    assert wait_final(array_id, count=2) == {f"{array_id}_{i}": "COMPLETED" for i in range(2)}
    folder = os.path.join(tmp_path, "searches", "00000-search-tiny")
    assert sorted(os.listdir(os.path.join(folder, "parts"))) == ["part-000-of-002.json", "part-001-of-002.json"]
    with open(os.path.join(folder, "parts", "part-001-of-002.json")) as f:
        assert [p["prompt_index"] for p in json.load(f)["prompts"]] == [1, 3]
    collected = subprocess.run([sys.executable, "-m", "textgan", "search", "collect", folder], capture_output=True,
                               text=True, timeout=300, cwd=ROOT)
    assert collected.returncode == 0, collected.stderr
    with open(os.path.join(folder, "search.json")) as f:
        record = json.load(f)
    assert [p["prompt"] for p in record["prompts"]] == prompts
    assert all(p["evaluations"] == 16 and p["baseline"]["evaluations"] == 16 for p in record["prompts"])
    assert os.path.exists(os.path.join(folder, "grid.png"))
    for i in range(2):
        assert os.path.exists(os.path.join(folder, "logs", f"{array_id}_{i}_0_log.out"))
