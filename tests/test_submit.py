"""launchers/submit.py's Slurm request: option -> sbatch mapping, checks before anything is submitted,
and the batch script --dry-run shows (submitit's own template)."""

import argparse
import os
import subprocess
import sys

import pytest

from test_train_e2e import ROOT, SUBMIT, TINY, shards  # noqa: F401  (shards is a fixture)
from textgan.errors import UsageError
from textgan.launch.slurm import add_slurm_arguments, parse_sbatch_options, parse_time, slurm_request


@pytest.mark.parametrize("text, minutes", [
    ("90", 90), ("5:30", 6), ("1:00:00", 60), ("2-12", 3600), ("1-00:30", 1470), ("0-00:01:01", 2), ("3:00", 3),
])
def test_slurm_time_formats_become_whole_minutes_rounded_up(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "1:2:3:4", "-5", "0", "1-2-3", "00:00"])
def test_bad_time_limits_name_the_accepted_formats(text):
    with pytest.raises(UsageError, match="D-HH:MM:SS"):
        parse_time(text)


def test_extra_sbatch_options_flags_and_refusals():
    assert parse_sbatch_options(["mail-type=END", "--exclusive", "mail_user=a@b.c", "gres=gpu:a100:4"]) == {
        "mail-type": "END", "exclusive": True, "mail-user": "a@b.c", "gres": "gpu:a100:4"}
    with pytest.raises(UsageError, match="submitit sets --output"):
        parse_sbatch_options(["output=/tmp/x"])
    with pytest.raises(UsageError, match="use the option --partition"):
        parse_sbatch_options(["partition=gpu"])
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_sbatch_options(["=x"])


def _request(*argv, local=False):
    p = argparse.ArgumentParser()
    add_slurm_arguments(p)
    return slurm_request(p.parse_args(list(argv)), local=local)


def test_one_task_per_gpu_by_default_and_submitit_parameters():
    request = _request("--nodes", "4", "--gpus-per-node", "8", "--time", "2-00:00:00", "--mem", "500G",
                       "--cpus-per-task", "10", "--sbatch", "exclusive")
    assert (request.tasks_per_node, request.world_size, request.time_min) == (8, 32, 2880)
    params = request.executor_parameters(array_parallelism=3)
    assert params["ntasks_per_node"] == 8 and params["gpus_per_node"] == 8 and params["mem"] == "500G"
    assert params["additional_parameters"] == {"exclusive": True} and params["array_parallelism"] == 3
    # logs appended; one failed task ends the step; cpus to srun too
    assert params["srun_args"] == ["--open-mode=append", "--kill-on-bad-exit=1", "--cpus-per-task=10"]
    cpu = _request("--tasks-per-node", "4")
    assert cpu.world_size == 4 and "gpus_per_node" not in cpu.executor_parameters()


@pytest.mark.parametrize("argv, message", [
    (["--nodes", "0"], "--nodes must be >= 1"),
    (["--gpus-per-node", "2", "--tasks-per-node", "4"], "needs its own GPU"),
    (["--time", "2", "--signal-delay", "90"], "raise --time or lower --signal-delay"),
    (["--time", "10", "--timeout-min", "10"], "once"),
    (["--mem", "lots"], "--mem 'lots'"),
    (["--max-requeues", "-1"], "--max-requeues"),
])
def test_impossible_requests_are_refused(argv, message):
    with pytest.raises(UsageError, match=message):
        _request(*argv)


def test_local_jobs_run_on_one_node():
    with pytest.raises(UsageError, match="--nodes 1"):
        _request("--nodes", "2", local=True)


def run_submit(*args, outdir, shards, env=None):  # noqa: F811
    sets = [x for kv in TINY + [f"data.shards={shards}", "schedule.total_kimg=1"] for x in ("--set", kv)]
    cmd = [sys.executable, SUBMIT, "--config", os.path.join(ROOT, "configs", "demo.yaml"), "--outdir", str(outdir),
           *sets, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def test_dry_run_shows_config_and_the_sbatch_script_with_every_option_mapped(tmp_path, shards):  # noqa: F811
    proc = run_submit("--dry-run", "--nodes", "2", "--tasks-per-node", "2", "--partition", "gpu", "--account", "proj",
                      "--qos", "high", "--constraint", "a100", "--mem", "64G", "--cpus-per-task", "3",
                      "--exclude", "node7", "--nodelist", "node[1-2]", "--job-name", "mine", "--time", "1-00:00:00",
                      "--signal-delay", "300", "--sbatch", "mail-type=END", "--setup", "module load cuda",
                      "--set", "schedule.batch_gpu=2", outdir=tmp_path, shards=shards)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "resolution: 16" in out and "# world size 4 = 2 node(s) x 2 task(s)" in out
    for line in ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=2", "#SBATCH --partition=gpu",
                 "#SBATCH --account=proj", "#SBATCH --qos=high", "#SBATCH --constraint=a100", "#SBATCH --mem=64G",
                 "#SBATCH --cpus-per-task=3", "#SBATCH --exclude=node7", "#SBATCH --nodelist='node[1-2]'",
                 "#SBATCH --job-name=mine", "#SBATCH --time=1440", "#SBATCH --signal=USR2@300",
                 "#SBATCH --mail-type=END", "#SBATCH --open-mode=append", "module load cuda",
                 "--kill-on-bad-exit=1", "--cpus-per-task=3 ", "-m submitit.core._submit"]:
        assert line in out, line
    assert "%j_%t_log.out" in out  # one log per rank; a requeued attempt appends to it
    assert not os.path.exists(tmp_path) or not os.listdir(tmp_path)


@pytest.mark.parametrize("args, message", [
    (["--nodes", "0"], "--nodes must be >= 1"),
    (["--time", "1:2:3:4"], "is not a Slurm time limit"),
    (["--sbatch", "array=0-3"], "submitit sets --array"),
    (["--set", "schedule.batch_size=10"], "multiple of"),
])
def test_bad_requests_exit_2_and_create_nothing(tmp_path, shards, args, message):  # noqa: F811
    proc = run_submit(*args, outdir=tmp_path, shards=shards)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert not os.path.exists(tmp_path) or not os.listdir(tmp_path)


def test_without_slurm_on_the_path_a_submission_explains_and_creates_nothing(tmp_path, shards):  # noqa: F811
    env = dict(os.environ, PATH=str(tmp_path / "empty-bin"))
    proc = run_submit(outdir=tmp_path / "runs", shards=shards, env=env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "sbatch/srun not found" in proc.stderr and "--local" in proc.stderr
    assert not os.path.exists(tmp_path / "runs")
