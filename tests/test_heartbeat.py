"""The trainer's heartbeat and attempt records (textgan.train.heartbeat): what a monitor reads without Slurm.

The end-to-end checks (a finished run's last heartbeat and its attempt lines; a requeued job's two attempts; a
job that could not requeue) are in tests/test_train_e2e.py and tests/test_requeue.py.
"""

import json
import os
import time

from textgan.train.heartbeat import (ATTEMPTS_FILE, FORMAT, HEARTBEAT_FILE, VERSION, Heartbeat, error_line,
                                     job_identity, next_attempt, record_attempt)

IDENTITY = {"attempt": 2, "job_id": "41_3", "array_task": 3, "hosts": "node[1-2]", "restart_count": 1}


def read(path):
    with open(path) as f:
        return json.load(f)


def test_a_heartbeat_writes_when_forced_and_then_at_most_every_interval(tmp_path):
    beat = Heartbeat(str(tmp_path / "run"), IDENTITY, every=0.2)  # the run dir is made on the first write
    assert beat.beat(0.0, 0, "starting", force=True)
    first = read(tmp_path / "run" / HEARTBEAT_FILE)
    assert not beat.beat(0.5, 1)  # within the interval: nothing written
    assert read(tmp_path / "run" / HEARTBEAT_FILE) == first
    time.sleep(0.25)
    assert beat.beat(0.75, 1)
    second = read(tmp_path / "run" / HEARTBEAT_FILE)
    assert (first["phase"], first["kimg"], second["phase"], second["kimg"], second["tick"]) == (
        "starting", 0.0, "training", 0.75, 1)
    assert second["unix"] > first["unix"] and second["utc"].endswith("+00:00")
    assert (second["format"], second["version"], second["every_s"], second["pid"]) == (FORMAT, VERSION, 0.2,
                                                                                       os.getpid())
    assert {k: second[k] for k in ("attempt", "job_id", "array_task", "hosts")} == {
        "attempt": 2, "job_id": "41_3", "array_task": 3, "hosts": "node[1-2]"}
    assert beat.beat(0.8, 1, "saving", force=True) and read(tmp_path / "run" / HEARTBEAT_FILE)["phase"] == "saving"
    assert sorted(os.listdir(tmp_path / "run")) == [HEARTBEAT_FILE]  # atomic: no tmp file left behind


def test_a_heartbeat_of_another_rank_writes_nothing(tmp_path):
    beat = Heartbeat(str(tmp_path), IDENTITY, enabled=False)
    assert not beat.beat(1.0, 1, force=True)
    assert os.listdir(tmp_path) == []


def test_the_job_identity_comes_from_slurm_or_submitits_local_executor(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST",
                 "SLURM_RESTART_COUNT", "SUBMITIT_LOCAL_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    local = job_identity(attempt=1)
    assert (local["job_id"], local["array_task"], local["restart_count"], local["attempt"]) == ("4242", None, 0, 1)
    assert local["hosts"]  # this machine's name
    monkeypatch.setenv("SLURM_JOB_ID", "57")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "55")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-04]")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    slurm = job_identity(attempt=4)
    assert (slurm["job_id"], slurm["array_task"], slurm["hosts"], slurm["restart_count"]) == ("55_2", 2, "gpu[01-04]", 3)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert job_identity()["job_id"] == "57"


def test_attempt_records_append_one_line_per_event_with_the_error_line(tmp_path):
    record_attempt(str(tmp_path), "start", IDENTITY, resume=None)
    try:
        raise ValueError("loss is NaN at kimg 3.2\nsecond line")
    except ValueError as e:
        record_attempt(str(tmp_path), "end", IDENTITY, outcome="failed", error=error_line(e), kimg=3.2)
    lines = [json.loads(line) for line in (tmp_path / ATTEMPTS_FILE).read_text().splitlines()]
    assert [(a["event"], a.get("outcome"), a["job_id"], a["attempt"]) for a in lines] == [
        ("start", None, "41_3", 2), ("end", "failed", "41_3", 2)]
    assert lines[1]["error"] == "ValueError: loss is NaN at kimg 3.2\nsecond line" and lines[1]["kimg"] == 3.2
    assert lines[1]["unix"] >= lines[0]["unix"]
    assert next_attempt(str(tmp_path)) == 2 and next_attempt(str(tmp_path / "fresh")) == 1
