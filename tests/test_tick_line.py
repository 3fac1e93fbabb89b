"""The tick line (tick, kimg / total, elapsed, sec/kimg, ETA, memory, augment p, losses) and each warning
once per run: the formatting from given summaries, the arithmetic, and a real tiny job stopped and
resumed through launchers/submit.py --local (its log, stats.jsonl and checkpoint)."""

import glob
import json
import logging
import math
import re
import subprocess
import sys

import pytest
import torch

from test_train_e2e import shards, stats_lines, submit  # noqa: F401  (shards is a fixture)
from textgan.train.tick_line import (ELAPSED, ETA, eta_seconds, format_duration, kimg_decimals, tick_line,
                                     timing_entries)
from textgan.warn_once import show_once


def entry(mean, num=1):
    return {"num": num, "mean": mean, "std": 0.0}


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (59.4, "59s"), (62, "1m 02s"), (3723, "1h 02m 03s"), (86399, "23h 59m 59s"),
    (2 * 86400 + 4 * 3600 + 59 * 60, "2d 04h"), (float("nan"), "-"), (None, "-"),
])
def test_durations_read_like_stylegan(seconds, text):
    assert format_duration(seconds) == text


def test_eta_is_remaining_kimg_times_this_ticks_sec_per_kimg():
    assert eta_seconds(48_000, 25_000_000, 12.5) == (25_000 - 48) * 12.5
    assert eta_seconds(25_000_000, 25_000_000, 12.5) == 0.0
    assert eta_seconds(25_000_016, 25_000_000, 12.5) == 0.0  # the last tick may overshoot total
    got = timing_entries(3723.0, 48_000, 25_000_000, {"Timing/sec_per_kimg": entry(12.5, num=2)})
    assert got == {ELAPSED: entry(3723.0), ETA: entry((25_000 - 48) * 12.5)}


def test_kimg_decimals_show_every_tick():
    assert kimg_decimals(4) == 1 and kimg_decimals(1) == 1
    assert kimg_decimals(0.016) == 3


SUMMARY = {
    "Timing/sec_per_kimg": entry(12.3456), ELAPSED: entry(3723.2), ETA: entry(3 * 86400 + 13 * 3600 + 5),
    "Resources/peak_mem_gb": entry(5.2149), "Loss/G/adv": entry(1.12345), "Loss/D/adv_real": entry(0.7151),
    "Loss/D/adv_fake": entry(0.5089), "Loss/D/r1": entry(0.00944),
}


def test_tick_line_columns_from_a_summary():
    line = tick_line(12, 48_000, 25_000_000, SUMMARY)
    assert line == ("tick 12     kimg 48.0/25000.0     time 1h 02m 03s   sec/kimg 12.35    eta 3d 13h       "
                    "mem 5.21 GB  G 1.123  D_real 0.715  D_fake 0.509  R1 0.0094")


def test_tick_line_adds_augment_contrastive_and_skips_only_when_they_apply():
    summary = dict(SUMMARY, **{"Progress/augment_p": entry(0.1234), "Loss/G/contrastive/total": entry(2.3456),
                               # 2 ranks x 4 iterations, one phase skipped on both ranks (skips are agreed)
                               "Health/nonfinite_skips": entry(0.25, num=8)})
    line = tick_line(12, 48_000, 25_000_000, summary, world_size=2)
    assert line == ("tick 12     kimg 48.0/25000.0     time 1h 02m 03s   sec/kimg 12.35    eta 3d 13h       "
                    "mem 5.21 GB  augment 0.123  G 1.123  D_real 0.715  D_fake 0.509  R1 0.0094  contrastive 2.346  "
                    "nonfinite_skips 1")
    no_skips = dict(summary, **{"Health/nonfinite_skips": entry(0.0, num=8)})
    assert "nonfinite_skips" not in tick_line(12, 48_000, 25_000_000, no_skips, world_size=2)


def test_tick_line_keeps_its_columns_when_values_are_missing():
    line = tick_line(1, 16, 32, {}, decimals=3)
    assert line == ("tick 1      kimg 0.016/0.032  time -            sec/kimg nan      eta -            "
                    "mem nan GB  G nan  D_real nan  D_fake nan  R1 nan")


# ---------------------------------------------------------------------- each warning once


def test_warn_once_prints_a_message_once_per_process_and_a_run_records_its_own():
    code = ("import warnings; from textgan.warn_once import warn_once, warning_mark, warnings_since\n"
            "warn_once('A has RANDOM weights'); mark = warning_mark()\n"
            "for _ in range(3): warn_once('B has RANDOM weights')\n"
            "warn_once('A has RANDOM weights'); print(warnings_since(mark))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("A has RANDOM weights") == 1 and proc.stderr.count("B has RANDOM weights") == 1
    assert proc.stdout.strip() == "['B has RANDOM weights', 'A has RANDOM weights']"


def test_show_once_lets_the_first_of_a_librarys_repeated_lines_through():
    logger, seen = logging.getLogger("test_tick_line.library"), []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        show_once(logger, "untested optimizer")
        show_once(logger, "untested optimizer")  # installing twice changes nothing
        for _ in range(3):
            logger.warning("**** untested optimizer ****")
            logger.warning("other")
    finally:
        logger.removeHandler(handler)
    assert seen == ["**** untested optimizer ****", "other", "other", "other"]


# ---------------------------------------------------------------------- a real job, stopped and resumed


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory, shards):  # noqa: F811
    out = tmp_path_factory.mktemp("tick")
    first = submit(outdir=out, shards=shards, total_kimg=0.016)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = out / "00000-demo"
    first_log_err = "".join(open(p).read() for p in glob.glob(str(run_dir / "logs" / "*_log.err")))
    first_stats = stats_lines(run_dir)
    ckpt = sorted(glob.glob(str(run_dir / "checkpoints" / "*" / "client_state.pt")))[-1]
    first_client = torch.load(ckpt, weights_only=True)
    second = submit("--resume", str(run_dir), outdir=out, shards=shards, total_kimg=0.032)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"run_dir": run_dir, "first": first, "first_err": first_log_err, "first_stats": first_stats,
            "first_client": first_client, "second": second}


@pytest.mark.slow  # with the fixture: two real jobs of ~25 s each
@pytest.mark.multiproc
def test_a_real_jobs_log_shows_each_warning_once(stopped_and_resumed):
    log = stopped_and_resumed["first"].stdout + stopped_and_resumed["first_err"]  # the job's stdout and stderr
    assert log.count("You are using ZeRO with an untested optimizer") == 1  # two engines, said once
    assert log.count("RANDOM weights") == 1, log  # the demo's random text tower
    assert "No pretrained weights loaded" not in log  # open_clip's own line for the same fact
    # open_clip's logging.info/warning would configure the root logger, printing submitit's lines twice
    assert "INFO:submitit:" not in stopped_and_resumed["first_err"]
    info = json.loads((stopped_and_resumed["run_dir"] / "run.json").read_text())
    assert any("CLIP model 'textgan-demo-clip' has RANDOM weights" in w for w in info["warnings"])
    assert len(info["warnings"]) == len(set(info["warnings"]))


@pytest.mark.slow  # with the fixture: two real jobs of ~25 s each
@pytest.mark.multiproc
def test_a_real_jobs_tick_line_has_every_column(stopped_and_resumed):
    lines = [line for line in stopped_and_resumed["first"].stdout.splitlines() if line.startswith("tick ")]
    assert len(lines) == 1
    assert re.fullmatch(r"tick 1 +kimg 0\.016/0\.016  time \d+s +sec/kimg \d+\.\d\d +eta 0s +mem \d+\.\d\d GB  "
                        r"G \d\.\d{3}  D_real \d\.\d{3}  D_fake \d\.\d{3}  R1 \d\.\d{4}  "
                        r"contrastive \d+\.\d{3}", lines[0]), lines[0]  # the demo has contrastive terms on


@pytest.mark.slow  # with the fixture: two real jobs of ~25 s each
@pytest.mark.multiproc
def test_elapsed_time_continues_across_a_stop_and_resume(stopped_and_resumed):
    first_tick = stopped_and_resumed["first_stats"][0]
    first_elapsed = first_tick[ELAPSED]["mean"]
    assert first_tick[ETA]["mean"] == 0.0  # the first attempt's total was reached
    saved = stopped_and_resumed["first_client"]["elapsed_sec"]
    assert saved >= first_elapsed > 0  # the checkpoint is written after the tick line

    lines = stats_lines(stopped_and_resumed["run_dir"])
    assert [line["Progress/tick"]["mean"] for line in lines] == [1, 2]
    assert lines[0][ELAPSED] == first_tick[ELAPSED]  # the first attempt's line is kept as it was
    second = lines[1]
    # tick 2 ran in the second attempt: its elapsed time counts the first attempt's (up to the checkpoint)
    # plus the second's setup and tick 2
    assert second[ELAPSED]["mean"] >= saved + second["Timing/sec_per_tick"]["mean"]
    assert second[ETA]["mean"] == 0.0 and math.isfinite(second["Timing/sec_per_kimg"]["mean"])
    assert "time " in stopped_and_resumed["second"].stdout and "resumed from" in stopped_and_resumed["second"].stdout
