"""textgan.monitor.slurm_jobs and usage: sacct/squeue output parsed as Slurm prints it, one squeue and one sacct
call for all runs, a clear note (and the file-based rows) when Slurm is missing or fails, and GPU-hours /
CPU core-hours and cost from Slurm's accounting or, without it, from the attempts' own records.

`squeue` and `sacct` are small shell scripts on PATH here, printing real-format lines (SQUEUE_FORMAT and
SACCT_FIELDS order) and recording their arguments; the real cluster is tests/test_monitor_slurm.py's.
"""

import json
import time

import pytest
from monitor_fixture import NOW, T0, beat, end, frozen_clock, make_run, rows_of, sacct_line, start, submit, tick_line

from textgan import cli
from textgan.monitor.rows import monitor_rows
from textgan.monitor.slurm_jobs import (SACCT_FIELDS, SQUEUE_FORMAT, SlurmUnavailable, SlurmView, duration_s,
                                        expand_job_ids, gpus_of, parse_sacct, parse_squeue, query)

# A 4-GPU job requeued once: sacct -D lists both instances (here newest first); typed GPUs appear in AllocTRES
# twice, as gres/gpu:TYPE=N and gres/gpu=N (Slurm with AccountingStorageTRES=gres/gpu,gres/gpu:a100).
GPU_TRES = "billing=54,cpu=16,gres/gpu:a100=4,gres/gpu=4,mem=208G,node=1"
SACCT_TEXT = "\n".join([
    "174|RUNNING|None|0:0|2026-12-01T03:20:40|2026-12-01T05:21:00|Unknown|1800|1|16|" + GPU_TRES + "||gpu7|240",
    "174|REQUEUED|None|0:0|2026-12-01T03:20:40|2026-12-01T03:20:41|2026-12-01T04:20:41|3600|1|16|" + GPU_TRES
    + "||gpu3|240",
    "175_[0-2%2]|PENDING|JobArrayTaskLimit|0:0|2026-12-01T03:30:00|Unknown|Unknown|0|1|4||"
    "billing=4,cpu=4,node=1|None assigned|60",
    "176|CANCELLED by 0|None|0:0|2026-12-01T03:30:00|2026-12-01T03:31:00|2026-12-01T03:35:00|240|1|1|"
    "billing=1,cpu=1,node=1||node2|10",
    "JobID|State|Reason",  # not a line of SACCT_FIELDS: skipped
]) + "\n"


def test_array_ids_expand_to_their_tasks():
    assert expand_job_ids("123_[0-2,5%2]") == ["123_0", "123_1", "123_2", "123_5"]
    assert expand_job_ids("123_[7]") == ["123_7"]
    assert expand_job_ids("123_4") == ["123_4"] and expand_job_ids("123") == ["123"]


@pytest.mark.parametrize("tres, gpus", [
    ("billing=8,cpu=8,gres/gpu=2,node=1", 2),
    ("gres/gpu:a100=4", 4),
    (GPU_TRES, 4),                                     # typed and untyped: the same 4 GPUs, not 8
    ("cpu=8,gres/gpu:a100=2,gres/gpu:v100=2,node=1", 4),
    ("cpu=8,mem=32G,gres/gpumem=40G,node=1", 0),
    ("", 0), (None, 0),
])
def test_gpus_of_a_tres_string(tres, gpus):
    assert gpus_of(tres) == gpus


def test_parse_sacct_orders_instances_by_start_expands_arrays_and_reads_every_field():
    assert len(SACCT_TEXT.splitlines()[0].split("|")) == len(SACCT_FIELDS) == 14
    jobs = parse_sacct(SACCT_TEXT)
    assert sorted(jobs) == ["174", "175_0", "175_1", "175_2", "176"]
    first, second = jobs["174"]
    assert (first["state"], second["state"]) == ("REQUEUED", "RUNNING")
    assert first == {"job_id": "174", "state": "REQUEUED", "reason": None, "exit_code": "0:0",
                     "submit": time.mktime((2026, 12, 1, 3, 20, 40, 0, 0, -1)),
                     "start": time.mktime((2026, 12, 1, 3, 20, 41, 0, 0, -1)),
                     "end": time.mktime((2026, 12, 1, 4, 20, 41, 0, 0, -1)), "elapsed_sec": 3600, "nodes": 1,
                     "cpus": 16, "gpus": 4, "node_list": "gpu3", "time_limit_min": 240}
    assert second["end"] is None and second["node_list"] == "gpu7"
    task = jobs["175_2"][0]
    assert (task["state"], task["reason"], task["start"], task["node_list"], task["cpus"], task["gpus"]) == (
        "PENDING", "JobArrayTaskLimit", None, None, 4, 0)  # ReqTRES when nothing is allocated yet
    assert jobs["176"][0]["state"] == "CANCELLED"


def test_parse_squeue_durations_gres_per_node_and_arrays():
    text = ("174|RUNNING|None|2|32|gres:gpu:4|gpu[1-2]|1-02:03:04|2-00:00:00\n"
            "175_[0-3]|PENDING|Priority|1|8|N/A||0:00|5:00\n"
            "177|RUNNING|None|1|1|gres/gpu:a100:2|gpu9|5:00|UNLIMITED\n")
    live = parse_squeue(text)
    assert sorted(live) == ["174", "175_0", "175_1", "175_2", "175_3", "177"]
    assert live["174"] == {"job_id": "174", "state": "RUNNING", "reason": None, "exit_code": None, "nodes": 2,
                           "cpus": 32, "gpus": 8, "node_list": "gpu[1-2]", "elapsed_sec": 93784,
                           "time_limit_min": 2880}
    assert (live["175_3"]["state"], live["175_3"]["reason"], live["175_3"]["node_list"], live["175_3"]["elapsed_sec"],
            live["175_3"]["time_limit_min"], live["175_3"]["gpus"]) == ("PENDING", "Priority", None, 0, 5, 0)
    assert (live["177"]["gpus"], live["177"]["elapsed_sec"], live["177"]["time_limit_min"]) == (2, 300, None)
    assert [duration_s(t) for t in ("1-02:03:04", "2:03:04", "5:00", "0:07", "UNLIMITED", "INVALID", "N/A")] == [
        93784, 7384, 300, 7, None, None, None]


def fake_slurm(tmp_path, squeue="", sacct="", squeue_exit=0, sacct_exit=0, missing=()):
    """A bin/ with squeue and sacct scripts that print `squeue`/`sacct` (or an error and exit code) and append
    their arguments to bin/calls; PATH is to hold it alone (the scripts use shell builtins only)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, out, code in (("squeue", squeue, squeue_exit), ("sacct", sacct, sacct_exit)):
        if name in missing:
            continue
        body = "".join(f"echo '{line}'\n" for line in out.splitlines()) if not code else (
            f"echo '{out}' >&2\nexit {code}\n")
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{bin_dir}/calls"\n{body}')
        (bin_dir / name).chmod(0o755)
    return bin_dir


def calls(bin_dir) -> list:
    path = bin_dir / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_query_asks_squeue_and_sacct_once_for_all_jobs(tmp_path, monkeypatch):
    bin_dir = fake_slurm(tmp_path, squeue="174|RUNNING|None|1|16|gres:gpu:4|gpu7|30:00|4:00:00", sacct=SACCT_TEXT)
    monkeypatch.setenv("PATH", str(bin_dir))
    view = query(["176", "174", "175_1", "175_2", "174", None])
    assert calls(bin_dir) == [f"squeue -h -r --jobs=174,175,176 -o {SQUEUE_FORMAT}",
                              f"sacct -X -D -P -n -j 174,175,176 -o {','.join(SACCT_FIELDS)}"]
    assert view.calls == 2 and sorted(view.live) == ["174"] and len(view.instances["174"]) == 2
    assert view.latest("174")["elapsed_sec"] == 1800 and view.latest("174")["gpus"] == 4  # the queue's line
    assert view.latest("176")["state"] == "CANCELLED" and view.latest("999") is None


def test_squeue_that_knows_none_of_the_jobs_is_an_empty_queue(tmp_path, monkeypatch):
    bin_dir = fake_slurm(tmp_path, squeue="slurm_load_jobs error: Invalid job id specified", squeue_exit=1,
                         sacct=SACCT_TEXT)
    monkeypatch.setenv("PATH", str(bin_dir))
    view = query(["176"])
    assert view.live == {} and view.latest("176")["state"] == "CANCELLED"


@pytest.mark.parametrize("kwargs, message", [
    ({"missing": ("squeue", "sacct")}, "`squeue` is not installed here"),
    ({"missing": ("sacct",)}, "`sacct` is not installed here"),
    ({"sacct": "sacct: error: Problem talking to the database: Connection refused", "sacct_exit": 1},
     "`sacct` failed (exit 1: sacct: error: Problem talking to the database: Connection refused); "
     "Slurm states are not shown"),
])
def test_query_raises_slurm_unavailable_naming_the_command(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.setenv("PATH", str(fake_slurm(tmp_path, **kwargs)))
    with pytest.raises(SlurmUnavailable) as e:
        query(["174"])
    assert str(e.value).startswith(message)


def files_only_run(tmp_path, monkeypatch):
    """A running run (as its files tell) whose job 174 Slurm is not there to confirm."""
    clock = frozen_clock(monkeypatch, time.time() - 600)
    run = make_run(str(tmp_path / "runs" / "00000-demo"), [tick_line(t, 4.0 * t) for t in (1, 2, 3)])
    submit(run, clock, clock.t, "174")
    start(run, clock, clock.t + 5, "174", 1)
    beat(run, clock, time.time() - 20, "174", 1, 12.0, 3)
    return run


def test_the_monitor_without_sacct_and_squeue_says_so_and_shows_the_files(tmp_path, monkeypatch, capsys):
    run = files_only_run(tmp_path, monkeypatch)
    monkeypatch.setenv("PATH", str(fake_slurm(tmp_path, missing=("squeue", "sacct"))))
    assert cli.main(["monitor", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr()
    assert out.err.startswith("textgan monitor: note: `squeue` is not installed here: Slurm job states")
    assert "install slurm-client" in out.err and out.err.count("\n") == 1
    header, line = out.out.splitlines()[:2]
    assert header.split()[:3] == ["run", "job", "state"]
    assert line.split()[:3] == ["00000-demo", "174", "?"] and "12/100" in line and "1: running" in line
    assert cli.main(["monitor", str(tmp_path / "runs"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["notes"]) == 1 and "`squeue` is not installed" in report["notes"][0]
    (row,) = report["runs"]
    assert row["run_dir"] == run and row["kimg"] == 12.0 and row["job"]["source"] == "files"


def test_no_slurm_asks_nothing_and_notes_nothing(tmp_path, monkeypatch, capsys):
    files_only_run(tmp_path, monkeypatch)
    bin_dir = fake_slurm(tmp_path, squeue="174|RUNNING|None|1|1|N/A|node1|5:00|10:00")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert cli.main(["monitor", str(tmp_path / "runs"), "--no-slurm", "--json"]) == 0
    out = capsys.readouterr()
    assert out.err == "" and json.loads(out.out)["notes"] == [] and calls(bin_dir) == []
    assert cli.main(["monitor", str(tmp_path / "runs"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["runs"][0]
    assert (row["job"]["state"], row["job"]["source"]) == ("RUNNING", "slurm") and len(calls(bin_dir)) == 2


# Usage --------------------------------------------------------------------------------------------------------

@pytest.fixture
def clock(monkeypatch):
    return frozen_clock(monkeypatch)


def gpu_run(tmp_path, clock, name="00000-demo", job="174", gpus=4, cpus=16):
    run = make_run(str(tmp_path / name), [tick_line(t, 4.0 * t) for t in (1, 2, 3)])
    submit(run, clock, T0, job, gpus_per_node=gpus, cpus_per_task=cpus)
    start(run, clock, T0 + 60, job, 1, gpus=gpus, cpus=cpus, world_size=max(gpus, 1))
    end(run, clock, T0 + 3660, job, 1, "requeued", kimg=4.0, cause="preemption")
    start(run, clock, T0 + 3700, job, 2, gpus=gpus, cpus=cpus, world_size=max(gpus, 1))
    return run


def test_gpu_hours_sum_elapsed_times_gpus_over_requeued_instances_and_cost_is_hours_times_price(tmp_path, clock):
    run = gpu_run(tmp_path, clock)
    (row,), asked = rows_of([run], NOW, sacct=SACCT_TEXT, price_per_gpu_hour=2.5, price_per_cpu_hour=100.0)
    assert asked == [["174"]]
    assert row["usage"] == {"unit": "gpu_hours", "gpu_hours": 6.0, "cpu_core_hours": 24.0, "cost": 15.0,
                            "source": "slurm"}  # (3600 + 1800) s x 4 GPUs; x 2.5
    assert [(a["state"], a["elapsed_sec"], a["node_list"]) for a in row["attempts"]] == [
        ("REQUEUED", 3600, "gpu3"), ("RUNNING", 1800, "gpu7")]
    assert (row["job"]["gpus"], row["job"]["nodes"], row["job"]["cpus"]) == (4, 1, 16)


def test_a_start_accounting_has_not_heard_of_counts_from_the_queue(tmp_path, clock):
    run = gpu_run(tmp_path, clock)
    old = "\n".join(SACCT_TEXT.splitlines()[1:2])  # accounting knows the first instance only
    (row,), _ = rows_of([run], NOW, sacct=old, squeue="174|RUNNING|None|1|16|gres:gpu:4|gpu7|30:00|4:00:00",
                        price_per_gpu_hour=1.0)
    assert row["usage"]["gpu_hours"] == 6.0 and row["usage"]["cost"] == 6.0 and row["job"]["state"] == "RUNNING"


def test_cpu_jobs_count_core_hours_at_the_cpu_price(tmp_path, clock):
    run = gpu_run(tmp_path, clock, gpus=0, cpus=16)
    sacct = "\n".join([sacct_line("174", "REQUEUED", elapsed=900, ncpus=16, end="2026-12-01T03:35:41"),
                       sacct_line("174", "RUNNING", elapsed=2700, ncpus=16, start="2026-12-01T03:36:00")])
    (row,), _ = rows_of([run], NOW, sacct=sacct, price_per_gpu_hour=2.5, price_per_cpu_hour=0.05)
    assert row["usage"] == {"unit": "cpu_core_hours", "gpu_hours": 0.0, "cpu_core_hours": 16.0, "cost": 0.8,
                            "source": "slurm"}
    (row,), _ = rows_of([run], NOW, sacct=sacct, price_per_gpu_hour=2.5)
    assert row["usage"]["cost"] is None  # no CPU price given: a GPU price says nothing about CPU jobs


def test_usage_from_the_attempts_alone_when_slurm_has_nothing(tmp_path, clock):
    run = gpu_run(tmp_path, clock, gpus=2, cpus=8)
    end(run, clock, T0 + 3700 + 1800, "174", 2, "completed", kimg=12.0)
    for kwargs in ({"slurm": False}, {"ask_slurm": lambda ids: SlurmView()}):
        (row,), _ = monitor_rows([run], NOW, price_per_gpu_hour=3.0, **kwargs)
        assert row["usage"] == {"unit": "gpu_hours", "gpu_hours": 3.0, "cpu_core_hours": 12.0, "cost": 9.0,
                                "source": "attempts"}  # (3600 + 1800) s x 2 GPUs; x 3
        assert [a["elapsed_sec"] for a in row["attempts"]] == [3600.0, 1800.0]


def test_usage_from_the_attempts_counts_an_attempt_without_an_end_to_its_last_heartbeat(tmp_path, clock):
    run = gpu_run(tmp_path, clock, gpus=2, cpus=8)  # attempt 2 started at T0 + 3700 and never ended
    beat(run, clock, T0 + 3700 + 900, "174", 2, 12.0, 3)
    (row,), _ = monitor_rows([run], T0 + 3700 + 1800, slurm=False)
    assert row["job"]["state"] is None and row["usage"]["source"] == "attempts"
    assert row["usage"]["gpu_hours"] == pytest.approx((3600 + 900) * 2 / 3600)


def test_a_job_completing_in_the_queue_takes_its_final_state_from_accounting():
    """scancel / the end of a job: squeue lists it COMPLETING for a while after sacct already says how it ended
    (seen on the test cluster: the monitor said COMPLETING / OK for a cancelled job)."""
    ended = parse_sacct(sacct_line("174", "CANCELLED by 0", elapsed=43))
    completing = parse_squeue("174|COMPLETING|None|1|1|N/A|node1|0:43|10:00")
    assert SlurmView(instances=ended, live=completing).latest("174")["state"] == "CANCELLED"
    assert SlurmView(instances={}, live=completing).latest("174")["state"] == "COMPLETING"  # nothing better known
    running = parse_squeue("174|RUNNING|None|1|1|N/A|node1|0:43|10:00")
    assert SlurmView(instances=ended, live=running).latest("174")["state"] == "RUNNING"  # a requeued instance runs
