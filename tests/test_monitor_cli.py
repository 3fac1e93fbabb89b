"""`textgan monitor` as a user runs it: --local jobs read from this machine's processes, one run's detail view,
hiding old finished runs, bad option values, the JSON's rows, that it writes nothing, and --watch.

Run directories are written by training's own writers (tests/monitor_fixture.py) against the real clock
(the command reads the time itself); Slurm is the fake squeue/sacct of tests/test_monitor_slurm_parsing.py.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from monitor_fixture import (SQ_RUNNING, beat, end, frozen_clock, identity, make_run, sacct_line, slurm_stub, start,
                             states, submit, submitit_err_log, tick_line)
from test_monitor import snapshot
from test_monitor_slurm_parsing import fake_slurm

from textgan import cli
from textgan.monitor.rows import monitor_rows
from textgan.train import heartbeat as hb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOST = "the job's process is gone and its last attempt recorded no end (killed: SIGKILL, OOM killer?)"

# A --local job as submitit's local executor runs it: its job id is its process id; it records its attempt and
# beats as the trainer does, then trains (sleeps) until killed.
LOCAL_JOB = """
import os, socket, sys, time
from textgan.train import heartbeat as hb
me = {"attempt": 1, "executor": "local", "job_id": str(os.getpid()), "array_task": None,
      "hosts": socket.gethostname(), "restart_count": 0}
hb.record_attempt(sys.argv[1], "start", me, resume=None, world_size=1, nodes=1, device="cpu", gpus=0, cpus=2)
hb.Heartbeat(sys.argv[1], me).beat(12.0, 3, "training", force=True)
print("training", flush=True)
time.sleep(60)
"""


def monitor(capsys, *argv):
    code = cli.main(["monitor", *map(str, argv)])
    return code, capsys.readouterr()


def local_identity(pid):
    return identity(pid, 1, executor="local", hosts=socket.gethostname())


@pytest.fixture
def local_job(tmp_path):
    """A running --local job: (run dir, its process)."""
    run = make_run(str(tmp_path / "00000-local"), [tick_line(t, 4.0 * t) for t in (1, 2, 3)])
    proc = subprocess.Popen([sys.executable, "-c", LOCAL_JOB, run], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert proc.stdout.readline() == "training\n"
        hb.record_submission(run, str(proc.pid), "local", None, total_kimg=100)
        yield run, proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_local_job_runs_while_its_process_lives_and_is_lost_when_killed_without_an_end(local_job):
    run, proc = local_job
    ask = slurm_stub()
    (row,), notes = monitor_rows([run], time.time(), ask_slurm=ask)
    assert ask.calls == [] and notes == []  # a --local job id is a process id: nothing to ask Slurm
    assert row["job"] == {"id": str(proc.pid), "state": "RUNNING", "source": "local", "reason": None,
                          "exit_code": None, "node_list": None, "nodes": 1, "tasks": 1, "gpus": 0, "cpus": 2}
    assert row["health"]["state"] == "OK" and row["usage"]["unit"] == "cpu_core_hours"
    started = row["attempts"][0]["started_unix"]
    (row,), _ = monitor_rows([run], started + 1800, ask_slurm=ask)  # running: counted to now (2 cores x 0.5 h)
    assert row["usage"] == {"unit": "cpu_core_hours", "gpu_hours": 0.0, "cpu_core_hours": 1.0, "cost": None,
                            "source": "attempts"}
    proc.kill()
    proc.wait()
    (row,), _ = monitor_rows([run], started + 1800, ask_slurm=ask, price_per_cpu_hour=0.5)
    assert row["job"]["state"] == "LOST" and states(row) == ["FAILED"] and row["health"]["evidence"] == LOST
    hours = (row["heartbeat"]["unix"] - started) * 2 / 3600  # dead: counted to its last heartbeat, not to now
    assert 0 < hours < 0.01 and row["usage"]["source"] == "attempts"
    assert row["usage"]["cpu_core_hours"] == pytest.approx(hours, abs=1e-6)
    assert row["usage"]["cost"] == pytest.approx(hours * 0.5, abs=1e-4)


@pytest.mark.parametrize("outcome, fields, state, health, said", [
    ("completed", {"kimg": 100.0}, "COMPLETED", [], None),
    ("interrupted", {"kimg": 12.0}, "INTERRUPTED", ["CANCELLED"], "stopped by Ctrl-C at 12.0 kimg, state saved"),
    ("failed", {"kimg": 12.0, "error": "KeyError: 'image'"}, "FAILED", ["FAILED"], "KeyError: 'image'"),
])
def test_a_local_jobs_state_after_its_process_is_the_attempts_outcome(tmp_path, outcome, fields, state, health, said):
    run = make_run(str(tmp_path / "00000-local"), [tick_line(t, 4.0 * t) for t in (1, 2, 3)])
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(proc.stdout)  # a process that has ended
    hb.record_submission(run, str(pid), "local", None, total_kimg=100)
    hb.record_attempt(run, "start", local_identity(pid), world_size=1, nodes=1, device="cpu", gpus=0, cpus=2)
    hb.record_attempt(run, "end", local_identity(pid), outcome=outcome, **fields)
    (row,), _ = monitor_rows([run], time.time(), ask_slurm=slurm_stub())
    assert (row["job"]["id"], row["job"]["state"], row["job"]["source"]) == (str(pid), state, "local")
    assert states(row) == health and row["health"]["evidence"] == (said or "")


# The detail view -----------------------------------------------------------------------------------------------

ERROR = "FileNotFoundError: data.shards: no shard matches /scratch/shards/coco64-{000000..000063}.tar"


def detailed_run(tmp_path, monkeypatch):
    """A run whose job 174 was preempted, requeued, then failed; with metrics, checkpoints and a log."""
    now = time.time()
    clock = frozen_clock(monkeypatch, now - 7200)
    run = make_run(str(tmp_path / "00007-coco64"), [tick_line(t, 4.0 * t) for t in (1, 2, 3)])
    submit(run, clock, now - 7200, "174", gpus_per_node=4, cpus_per_task=4)
    start(run, clock, now - 7190, "174", 1, gpus=4, cpus=16, world_size=4, hosts="gpu3")
    end(run, clock, now - 3590, "174", 1, "requeued", kimg=4.0, cause="preemption", hosts="gpu3")
    start(run, clock, now - 3500, "174", 2, gpus=4, cpus=16, world_size=4, hosts="gpu7")
    beat(run, clock, now - 700, "174", 2, 12.0, 3, hosts="gpu7")
    end(run, clock, now - 600, "174", 2, "failed", kimg=12.0, error=ERROR, hosts="gpu7")
    with open(os.path.join(run, "metric-fid1k.jsonl"), "w") as f:
        f.writelines(json.dumps({"tick": t, "kimg": 4.0 * t, "value": v, "results": {"fid1k": v}}) + "\n"
                     for t, v in ((1, 80.0), (2, 60.0), (3, 70.0)))
    for folder in ("logs", "checkpoints/000012.000", "best/fid1k"):
        os.makedirs(os.path.join(run, folder))
    with open(os.path.join(run, "logs", "174_0_log.err"), "w") as f:
        f.write(submitit_err_log(ERROR))
    with open(os.path.join(run, "checkpoints", "latest"), "w") as f:
        f.write("000012.000")
    with open(os.path.join(run, "best", "fid1k", "COMPLETE"), "w") as f:
        json.dump({"format": "textgan-checkpoint", "version": 1, "tag": "fid1k", "serial": 3, "finite": True}, f)
    sacct = "\n".join([sacct_line("174", "REQUEUED", elapsed=3600, ncpus=16, tres="billing=16,cpu=16,gres/gpu=4,node=1",
                                  node_list="gpu3", end="2026-12-01T04:20:41"),
                       sacct_line("174", "FAILED", elapsed=2900, exit_code="1:0", ncpus=16, node_list="gpu7",
                                  tres="billing=16,cpu=16,gres/gpu=4,node=1", start="2026-12-01T04:22:00",
                                  end="2026-12-01T05:10:20")])
    monkeypatch.setenv("PATH", str(fake_slurm(tmp_path, sacct=sacct)))
    return run


def test_one_run_shows_its_attempts_curves_health_log_checkpoints_and_tensorboard(tmp_path, monkeypatch, capsys):
    run = detailed_run(tmp_path, monkeypatch)
    code, out = monitor(capsys, run, "--price-per-gpu-hour", "2")
    assert code == 0 and out.err == ""
    text = out.out.splitlines()
    assert text[1].split()[:5] == ["00007-coco64", "174", "FAILED", "1", "x"]
    assert "2: failed (1 requeued)" in text[1] and "7.22 GPU-h" in text[1] and "14.44" in text[1]
    assert "fid1k 70 (worse) (best 60 @ 8)" in text[1] and text[1].endswith("FAILED")
    assert f"00007-coco64: FAILED: {ERROR}" in text and "00007-coco64: PREEMPTED: requeued 1 time: 1 preemption" in text
    at = text.index("attempts:")
    assert text[at + 1].split() == ["attempt", "job", "hosts", "start", "(UTC)", "end", "(UTC)", "state", "exit",
                                    "elapsed", "ended", "because"]
    first, second = text[at + 2].split(), text[at + 3].split()
    assert first[:3] == ["1", "174", "gpu3"] and first[5:] == ["REQUEUED", "0:0", "1:00:00", "requeued", "(preemption)"]
    assert second[:3] == ["2", "174", "gpu7"] and second[5:9] == ["FAILED", "1:0", "48:20", "failed:"]
    assert text[at + 3].endswith(f"failed: {ERROR}")
    assert "  fid1k: 3 evaluations; value@kimg: 80@4 60@8 70@12" in text
    assert "health:" in text and f"  FAILED: {ERROR}  (rule: the job failed)" in text
    assert "  PREEMPTED: requeued 1 time: 1 preemption  (rule: preempted and requeued)" in text
    log = text.index(f"last lines of {run}/logs/174_0_log.err:")
    assert text[log + 1:log + 16][-2:] == [f"  {ERROR}", "  srun: error: node1: task 0: Exited with exit code 1"]
    assert f"newest checkpoint: {run}/checkpoints/000012.000" in text
    assert f"best checkpoint by fid1k: {run}/best/fid1k (save #3)" in text
    assert text[-1] == f"tensorboard --logdir {run}"


# Which runs are shown, bad values, the JSON, writing nothing ---------------------------------------------------

def two_runs(tmp_path, monkeypatch):
    """runs/00000-old (completed 48 h ago) and runs/00001-new (running, a fresh heartbeat)."""
    now = time.time()
    clock = frozen_clock(monkeypatch)
    old = make_run(str(tmp_path / "runs" / "00000-old"), [tick_line(t, 4.0 * t) for t in (1, 2, 3)])
    submit(old, clock, now - 50 * 3600, "170")
    start(old, clock, now - 50 * 3600 + 60, "170", 1)
    end(old, clock, now - 48 * 3600, "170", 1, "completed", kimg=100.0)
    new = make_run(str(tmp_path / "runs" / "00001-new"), [tick_line(t, 4.0 * t) for t in (1, 2)])
    submit(new, clock, now - 600, "174")
    start(new, clock, now - 590, "174", 1)
    beat(new, clock, now - 20, "174", 1, 8.0, 2)
    return tmp_path / "runs"


def shown(capsys, *argv):
    code, out = monitor(capsys, *argv, "--json")
    assert code == 0, out.err
    report = json.loads(out.out)
    return [r["desc"] for r in report["runs"]], report["hidden"]


def test_old_finished_runs_are_hidden_unless_all_or_a_longer_hide_after(tmp_path, monkeypatch, capsys):
    runs = two_runs(tmp_path, monkeypatch)
    assert shown(capsys, runs, "--no-slurm") == (["00001-new"], 1)
    assert shown(capsys, runs, "--no-slurm", "--all") == (["00000-old", "00001-new"], 0)
    assert shown(capsys, runs, "--no-slurm", "--hide-after", "48.1") == (["00000-old", "00001-new"], 0)
    assert shown(capsys, runs, "--no-slurm", "--hide-after", "47.9") == (["00001-new"], 1)
    assert shown(capsys, runs / "00000-old", "--no-slurm") == (["00000-old"], 0)  # asked for by name
    code, out = monitor(capsys, runs, "--no-slurm")
    assert out.out.splitlines()[-1] == "(1 run(s) that ended more than a while ago are hidden: --all shows them)"


@pytest.mark.parametrize("value, message", [
    ("-1", "argument --price-per-gpu-hour: -1 is negative"),
    ("abc", "argument --price-per-gpu-hour: 'abc' is not a number"),
    ("nan", "argument --price-per-gpu-hour: nan is not a finite number"),
    ("inf", "argument --price-per-gpu-hour: inf is not a finite number"),
])
def test_a_bad_price_exits_2_naming_it(tmp_path, monkeypatch, capsys, value, message):
    runs = two_runs(tmp_path, monkeypatch)
    code, out = monitor(capsys, runs, "--no-slurm", "--price-per-gpu-hour", value)
    assert code == 2 and message in out.err and out.out == ""


def test_html_into_a_missing_directory_or_onto_a_directory_exits_2(tmp_path, monkeypatch, capsys):
    runs = two_runs(tmp_path, monkeypatch)
    code, out = monitor(capsys, runs, "--no-slurm", "--html", tmp_path / "missing" / "monitor.html")
    assert code == 2 and f"--html {tmp_path}/missing/monitor.html: its directory does not exist" in out.err
    code, out = monitor(capsys, runs, "--no-slurm", "--html", tmp_path)
    assert code == 2 and f"--html {tmp_path} is a directory" in out.err
    assert not (tmp_path / "missing").exists() and out.out == ""


def test_every_json_row_has_job_usage_health_and_submissions_and_the_monitor_writes_nothing(tmp_path, monkeypatch,
                                                                                          capsys):
    runs = two_runs(tmp_path, monkeypatch)
    os.makedirs(runs / "00001-new" / "logs")
    (runs / "00001-new" / "logs" / "174_0_log.err").write_text(submitit_err_log(ERROR))
    monkeypatch.setenv("PATH", str(fake_slurm(tmp_path, squeue=SQ_RUNNING, sacct=sacct_line("170", "COMPLETED"))))
    before = snapshot(runs)
    code, out = monitor(capsys, runs, "--all", "--json", "--price-per-gpu-hour", "1", "--stall-floor", "60")
    assert code == 0 and out.err == ""
    rows = json.loads(out.out)["runs"]
    for row in rows:
        assert {"job", "usage", "health", "submissions"} <= set(row)
        assert set(row["job"]) == {"id", "state", "source", "reason", "nodes", "tasks", "gpus", "cpus", "exit_code",
                                   "node_list"}
        assert set(row["usage"]) == {"unit", "gpu_hours", "cpu_core_hours", "cost", "source"}
        assert set(row["health"]) == {"state", "rule", "evidence", "all"}
        assert [s["job_id"] for s in row["submissions"]] == [row["job"]["id"]]
    assert [(r["job"]["state"], r["job"]["source"], r["health"]["state"]) for r in rows] == [
        ("COMPLETED", "slurm", "OK"), ("RUNNING", "slurm", "OK")]
    for argv in ([runs], [runs / "00001-new"], [runs, "--all", "--no-slurm"]):
        assert monitor(capsys, *argv)[0] == 0
    assert snapshot(runs) == before


# --watch -------------------------------------------------------------------------------------------------------

def watch(tmp_path, monkeypatch, stdout, refreshes):
    """`textgan monitor RUNS --watch 1` in its own process until its --html page was written `refreshes` times
    (it is rewritten at each refresh, stamped with the time), then SIGINT; the process and the stamps seen."""
    runs = two_runs(tmp_path, monkeypatch)
    page = tmp_path / "page.html"
    proc = subprocess.Popen([sys.executable, "-m", "textgan.cli", "monitor", str(runs), "--watch", "1", "--no-slurm",
                             "--html", str(page)], stdout=stdout, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=ROOT, COLUMNS="200", TERM="xterm"),
                            # Ctrl-C's default even when these tests run in the background (SIGINT ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stamps = []
    deadline = time.time() + 30
    while len(stamps) < refreshes and time.time() < deadline and proc.poll() is None:
        stamp = re.search(r"<title>textgan monitor (\S+)</title>", page.read_text()) if page.exists() else None
        if stamp and stamp.group(1) not in stamps:
            stamps.append(stamp.group(1))
        time.sleep(0.05)
    time.sleep(0.3)  # let the refresh that wrote the page reach the screen (the next one is 1 s away)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    return proc, stamps


def test_watch_without_a_terminal_prints_the_last_table_once_when_interrupted(tmp_path, monkeypatch):
    proc, stamps = watch(tmp_path, monkeypatch, subprocess.PIPE, refreshes=3)
    out = proc.stdout.read().decode()
    proc.stdout.close()
    assert len(stamps) == 3 and proc.returncode == 0, out
    # rich's Live draws nothing while stdout is not a terminal; on exit it prints the last refresh once.
    assert out.count("00001-new") == 1 and "00000-old" not in out and "Traceback" not in out
    assert re.search(r"textgan monitor - (\S+) - every 1 s \(Ctrl-C stops\)", out).group(1) in stamps[1:]
    assert "(1 ended run(s) hidden: --all shows them)" in out


def test_watch_on_a_terminal_redraws_at_each_refresh(tmp_path, monkeypatch):
    import pty

    leader, follower = pty.openpty()
    try:
        try:
            proc, stamps = watch(tmp_path, monkeypatch, follower, refreshes=3)
        finally:
            os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: everything is read
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
    text = out.decode(errors="replace")
    assert len(stamps) == 3 and proc.returncode == 0, text
    assert text.count("00001-new") >= 3 and "Traceback" not in text  # the first draw and each refresh


def test_every_readme_monitor_command_runs_as_printed(tmp_path):
    """The README's `textgan monitor ...` lines, run as printed in a folder whose runs/ holds a run (--watch is
    stopped with Ctrl-C after its first refreshes)."""
    from test_cli import readme_textgan_commands
    from test_monitor import write_run

    commands = [c for c in readme_textgan_commands() if c[1] == "monitor"]
    assert len(commands) >= 5 and any("--watch" in c for c in commands) and any("--html" in c for c in commands)
    write_run(tmp_path / "runs" / "00000-demo")
    env = dict(os.environ, PYTHONPATH=ROOT)
    for command in commands:
        argv = [sys.executable, "-m", *command, "--no-slurm"]
        if "--watch" in command:
            proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            time.sleep(4)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            code = proc.returncode
        else:
            done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            code, out, err = done.returncode, done.stdout, done.stderr
        assert code == 0, (command, err[-2000:])
        assert "00000-demo" in out, (command, out[-2000:])
    assert (tmp_path / "monitor.html").stat().st_size > 1000


def test_a_reader_that_leaves_early_stops_the_monitor_quietly(tmp_path):
    """`textgan monitor --json | head`: no BrokenPipeError traceback, the exit status a shell expects (141)."""
    from test_monitor import write_run

    for i in range(200):  # ~180 KB of JSON: more than a pipe buffers (64 KB)
        write_run(tmp_path / "runs" / f"{i:05d}-demo")
    proc = subprocess.Popen([sys.executable, "-m", "textgan.cli", "monitor", str(tmp_path / "runs"), "--json",
                             "--no-slurm"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.stdout.read(10) == b'{\n "format'
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err, err
