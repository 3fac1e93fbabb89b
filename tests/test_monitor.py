"""`textgan monitor`, first part: rows read from run directories (progress, speed, ETA, attempts, heartbeat,
metrics), the tail reader behind it, the JSON schema, bad paths, and that it writes nothing.

The run directories here are written by hand in the formats training writes (stats.jsonl lines of
StatsWriter, heartbeat.json and attempts.jsonl of textgan.train.heartbeat, metric-NAME.jsonl of the
evaluator); tests/test_train_e2e.py reads a real finished run with it.
"""

import json
import os
import subprocess
import sys

import pytest

from textgan import cli
from textgan.monitor.run_state import SCHEMA_VERSION, read_run
from textgan.monitor.tail import BLOCK, tail_json, tail_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOW = 1_800_000_000.0


def stats_line(tick, kimg, sec_per_kimg, elapsed, skips=0.0):
    mean = lambda v: {"num": 1, "mean": v, "std": 0.0}  # noqa: E731
    return {"Progress/tick": mean(tick), "Progress/kimg": mean(kimg), "Timing/sec_per_kimg": mean(sec_per_kimg),
            "Timing/elapsed_sec": mean(elapsed), "Health/nonfinite_skips": mean(skips), "Data/skipped": mean(0.0),
            "timestamp": NOW - 60}


def write_run(run_dir, total_kimg=10, ticks=((1, 2, 10.0), (2, 4, 20.0), (3, 6, 30.0), (4, 8, 40.0))):
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"desc: demo\nschedule:\n  total_kimg: {total_kimg}\n  batch_size: 32\n")
    (run_dir / "stats.jsonl").write_text("".join(json.dumps(stats_line(t, k, s, 100.0 * t)) + "\n"
                                                 for t, k, s in ticks))
    return run_dir


def test_tail_lines_reads_the_last_complete_lines_of_any_size_of_file(tmp_path):
    path = tmp_path / "big.jsonl"
    lines = [json.dumps({"i": i, "pad": "x" * 100}) for i in range(3 * BLOCK // 100)]  # several blocks
    path.write_text("\n".join(lines) + "\n" + '{"i": "being written')  # the last line is unfinished
    assert tail_lines(str(path), 3) == lines[-3:]
    assert [d["i"] for d in tail_json(str(path), 5)] == list(range(len(lines) - 5, len(lines)))
    assert tail_lines(str(path), 0) == [] and tail_lines(str(tmp_path / "missing"), 3) == []
    short = tmp_path / "short"
    short.write_text("a\nb\n")
    assert tail_lines(str(short), 10) == ["a", "b"]


def test_a_run_row_has_progress_speed_eta_attempts_heartbeat_and_metrics(tmp_path):
    run_dir = write_run(tmp_path / "00003-demo")
    (run_dir / "heartbeat.json").write_text(json.dumps({
        "format": "textgan-heartbeat", "version": 1, "unix": NOW - 120, "utc": "x", "kimg": 8.3, "tick": 4,
        "phase": "training", "attempt": 2, "job_id": "77", "hosts": "n1", "pid": 1, "every_s": 30}))
    (run_dir / "attempts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [
        {"event": "start", "attempt": 1, "job_id": "77", "hosts": "n1", "utc": "t0"},
        {"event": "end", "attempt": 1, "job_id": "77", "hosts": "n1", "utc": "t1", "outcome": "requeued", "kimg": 5.0},
        {"event": "start", "attempt": 2, "job_id": "77", "hosts": "n2", "utc": "t2"}]))
    (run_dir / "requeues.jsonl").write_text('{"requeue": 1}\n')
    (run_dir / "metric-fid1k.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [
        {"tick": 1, "kimg": 2.0, "value": 80.0, "results": {"fid": 80.0}},
        {"tick": 2, "kimg": 4.0, "value": 60.0, "results": {"fid": 60.0}},
        {"tick": 3, "kimg": 6.0, "value": 70.0, "results": {"fid": 70.0}}]))
    row = read_run(str(run_dir), now=NOW)
    assert (row["desc"], row["kimg"], row["total_kimg"], row["progress"], row["tick"]) == ("00003-demo", 8.0, 10.0,
                                                                                          0.8, 4)
    assert row["sec_per_kimg"] == 30.0  # median of the last 3 ticks (20, 30, 40)
    assert row["eta_sec"] == pytest.approx(2 * 30.0) and row["elapsed_sec"] == 400.0
    assert row["heartbeat"]["age_sec"] == pytest.approx(120.0) and row["heartbeat"]["phase"] == "training"
    assert [(a["attempt"], a["outcome"], a["hosts"], a["kimg"]) for a in row["attempts"]] == [
        (1, "requeued", "n1", 5.0), (2, None, "n2", None)]
    assert row["requeues"] == 1
    assert row["metrics"]["fid1k"] == {"latest": 70.0, "latest_kimg": 6.0, "best": 60.0, "best_kimg": 4.0,
                                       "trend": "worse"}


def test_a_run_without_stats_yet_is_shown_as_not_started(tmp_path):
    run_dir = tmp_path / "00000-demo"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("schedule:\n  total_kimg: 5\n")
    row = read_run(str(run_dir), now=NOW)
    assert (row["kimg"], row["progress"], row["sec_per_kimg"], row["eta_sec"], row["heartbeat"], row["attempts"]) == (
        None, None, None, None, None, [])


def monitor(capsys, *argv):
    code = cli.main(["monitor", *map(str, argv)])
    return code, capsys.readouterr()


def snapshot(root):
    return sorted((os.path.relpath(os.path.join(d, f), root), os.path.getmtime(os.path.join(d, f)))
                  for d, _, files in os.walk(root) for f in files)


def test_monitor_finds_runs_and_sweep_points_prints_a_table_and_json_and_writes_nothing(tmp_path, capsys):
    write_run(tmp_path / "runs" / "00000-demo")
    write_run(tmp_path / "runs" / "00001-sweep-lr" / "00000-lr0.001", total_kimg=8)
    (tmp_path / "runs" / "notes").mkdir()  # neither a run nor holding one: skipped
    before = snapshot(tmp_path)
    code, out = monitor(capsys, tmp_path / "runs")
    assert code == 0, out.err
    lines = out.out.splitlines()
    assert lines[0].split()[:3] == ["run", "job", "state"] and len(lines) == 3
    assert lines[1].startswith("00000-demo") and "[################....] 8/10" in lines[1]
    assert lines[2].startswith("00000-lr0.001") and "8/8" in lines[2]
    code, out = monitor(capsys, tmp_path / "runs", "--json")
    data = json.loads(out.out)
    assert (data["format"], data["version"]) == ("textgan-monitor", SCHEMA_VERSION)
    assert [r["desc"] for r in data["runs"]] == ["00000-demo", "00000-lr0.001"]
    assert set(data["runs"][0]) == {"run_dir", "desc", "kimg", "total_kimg", "progress", "tick", "sec_per_kimg",
                                    "eta_sec", "elapsed_sec", "last_tick_utc", "nonfinite_skips", "data_skipped",
                                    "heartbeat", "attempts", "requeues", "metrics", "submissions", "job", "usage",
                                    "health", "name"}
    code, out = monitor(capsys, tmp_path / "runs" / "00000-demo", "--json")
    assert [r["desc"] for r in json.loads(out.out)["runs"]] == ["00000-demo"]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nope", "no such directory"),
    (lambda p: p, "holds no run directory"),
])
def test_bad_paths_exit_2_naming_the_problem(tmp_path, capsys, make, message):
    code, out = monitor(capsys, make(tmp_path))
    assert code == 2 and message in out.err and out.out == ""


def test_monitor_starts_without_torch(tmp_path):
    write_run(tmp_path / "00000-demo")
    script = ("import sys; from textgan import cli; code = cli.main(['monitor', sys.argv[1]]); "
              "print(code, sorted(m for m in ('torch', 'numpy', 'deepspeed') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "0 []"
