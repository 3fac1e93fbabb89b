"""Two ranks on one machine: launchers/submit.py --local --tasks-per-node 2 trains with ZeRO-2 on gloo,
writes one run directory with per-rank checkpoint state, and every process of the job exits cleanly.
"""

import json
import os
import time

import pytest
import torch

from test_train_e2e import shards, stats_lines, submit  # noqa: F401  (shards is a fixture)


def processes_mentioning(text: str) -> list:
    """pids of live processes whose command line contains `text` (the job's own log folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended while we looked
            continue
        if text in cmdline:
            found.append(int(pid))
    return found


@pytest.mark.slow
@pytest.mark.multiproc
def test_two_ranks_zero2_train_checkpoint_and_exit_cleanly(tmp_path, shards):  # noqa: F811
    # The demo's own architecture (cgan with the matching-aware term), here on two ranks.
    zero2 = ["--set", "dist.zero_stage_G=2", "--set", "dist.zero_stage_D=2", "--set", "model.arch=cgan"]
    proc = submit("--tasks-per-node", "2", *zero2, outdir=tmp_path, shards=shards, total_kimg=0.032)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "00000-demo"
    assert "on 2 rank(s)" in proc.stdout and f"run_dir:          {run_dir}" in proc.stdout

    # batch 8 = batch_gpu 4 x 2 ranks: two iterations per tick, each rank reporting every loss once per
    # iteration and its timing once per tick; the stats are reduced over both ranks.
    lines = stats_lines(run_dir)
    assert [line["Progress/kimg"]["mean"] for line in lines] == [0.016, 0.032]
    for line in lines:
        assert line["Loss/G/adv"]["num"] == line["Loss/D/adv_real"]["num"] == 2 * 2
        assert line["Timing/sec_per_tick"]["num"] == 2

    ckpt = run_dir / "checkpoints" / "000000.032"  # the last tick's (32 images)
    marker = json.loads((ckpt / "COMPLETE").read_text())
    assert (marker["world_size"], marker["G_stage"], marker["D_stage"]) == (2, 2, 2)
    for rank in (0, 1):
        own = torch.load(ckpt / f"rank{rank:05d}.pt", weights_only=True)
        loader = own["state"]["loader"]
        assert (own["rank"], loader["rank"], loader["world_size"]) == (rank, rank, 2)
        assert loader["seen"] == 4 * 4  # this rank's share: 4 iterations x batch_gpu 4
        for side in ("G", "D"):  # ZeRO-2: each rank saved its own partition of the optimizer state
            assert (ckpt / side / "000000.032" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").is_file()

    # Both ranks finished (a result each) and said so; no rank was aborted on the way out.
    logs = run_dir / "logs"
    job_id = next(name.split("_")[0] for name in os.listdir(logs) if name.endswith("_submitted.pkl"))
    for rank in (0, 1):
        assert (logs / f"{job_id}_{rank}_result.pkl").is_file()
        assert "Job completed successfully" in (logs / f"{job_id}_{rank}_log.out").read_text()
        err = (logs / f"{job_id}_{rank}_log.err").read_text()
        assert "terminate called" not in err and "Traceback" not in err, err[-3000:]
    deadline = time.time() + 30
    while processes_mentioning(str(logs)) and time.time() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(str(logs)) == []  # no rank left behind
