"""Replacing RUN/best/<metric> survives a kill -9 at every step.

A new best replaces the old one in two renames (`<tag>` -> `trash-<tag>-<ns>`, `tmp-<tag>` -> `<tag>`),
then the `latest` pointer, then pruning. Each test starts a real process that trains the tiny nets on
a DeepSpeed engine (one rank), saves a best checkpoint (value 10), trains on, and saves a better one
(value 5) through save_checkpoint, the path PeriodicMetrics takes; the process SIGKILLs itself at one
step of that second save (os.rename / shutil.rmtree wrapped to kill before or after the n-th call on
the best root). The parent then reads the best back as a resumed run does (read_best).
"""

import os
import signal
import subprocess
import sys

import pytest
import torch

from dist_util import setup_training, tiny_cfg
from textgan.runtime import free_port
from textgan.train import checkpoint as ck
from textgan.train.periodic_metrics import BEST_KEY, read_best

TESTS = os.path.dirname(os.path.abspath(__file__))
METRIC = "fid10k"
# point: (function wrapped, which call on the best root, kill before or after it), value expected after
CRASH_POINTS = {
    "before_first_rename": (("rename", 1, "before"), 10.0),  # new one complete in tmp-: old best stays
    "between_the_renames": (("rename", 2, "before"), 5.0),  # no <tag> at all: tmp- is promoted
    "before_the_pointer": (("rename", 2, "after"), 5.0),
    "while_pruning": (("rmtree", 1, "before"), 5.0),  # the trash copy is still there
}


def _record(value, cur_nimg):
    return {"metric": METRIC, "value": value, "higher_is_better": False, "kimg": cur_nimg / 1000, "tick": 1}


def _kill_at(best_root, point):
    """Wrap os.rename or shutil.rmtree so that this process is killed (SIGKILL) at the chosen call."""
    import shutil

    (name, n, when), _ = CRASH_POINTS[point]
    owner = os if name == "rename" else shutil
    real = getattr(owner, name)
    calls = []

    def wrapped(path, *args, **kwargs):
        ours = os.path.dirname(os.path.abspath(path)) == best_root
        if name == "rmtree":  # the save's own clean-up of tmp- is not the pruning step
            ours = ours and os.path.basename(path).startswith(ck.TRASH_PREFIX)
        if ours:
            calls.append(path)
        if ours and len(calls) == n and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(path, *args, **kwargs)
        if ours and len(calls) == n and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, wrapped)


def crash_child(root, point):
    """Runs in its own process (see module docstring); never returns normally when the kill works."""
    from textgan.train.step import train_step

    cfg = tiny_cfg()
    setup, batches, state = setup_training(cfg)
    engines = setup.engines
    best_root = os.path.join(root, "best")

    def step():
        train_step(setup, batches, state)

    step()
    torch.save(engines.G_ema.state_dict(), os.path.join(root, "old_G_ema.pt"))
    ck.save_checkpoint(best_root, METRIC, engines, {BEST_KEY: _record(10.0, state.cur_nimg)}, keep=1)
    step()
    torch.save(engines.G_ema.state_dict(), os.path.join(root, "new_G_ema.pt"))
    _kill_at(best_root, point)
    ck.save_checkpoint(best_root, METRIC, engines, {BEST_KEY: _record(5.0, state.cur_nimg)}, keep=1)


def _run_child(root, point):
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "DS_ACCELERATOR": "cpu",
           "OMP_NUM_THREADS": "1"}
    code = f"import sys; sys.path.insert(0, {TESTS!r}); import test_best_replacement as t; t.crash_child({root!r}, {point!r})"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.multiproc
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_kill_at_any_step_of_replacing_the_best_keeps_a_best(tmp_path, point):
    root = str(tmp_path)
    proc = _run_child(root, point)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    best_root = os.path.join(root, "best")
    left = sorted(os.listdir(best_root))
    if point == "between_the_renames":  # the state the fault campaign found: both copies under other names
        assert METRIC not in left and f"tmp-{METRIC}" in left and any(n.startswith(f"trash-{METRIC}-") for n in left)

    best = read_best(best_root, METRIC)  # what a resumed run reads at start
    expected = CRASH_POINTS[point][1]
    assert best is not None and best["value"] == expected and best["checkpoint"] == os.path.join(best_root, METRIC)
    G_ema = ck.load_weights(best["checkpoint"])["G_ema"]
    wanted = torch.load(os.path.join(root, "old_G_ema.pt" if expected == 10.0 else "new_G_ema.pt"), weights_only=True)
    assert G_ema.keys() == wanted.keys() and all(torch.equal(G_ema[k], wanted[k]) for k in wanted)
    assert ck.find_latest(best_root) == best["checkpoint"]
    with open(os.path.join(best_root, "latest")) as f:
        assert f.read() == METRIC


def test_recovery_restores_the_trash_copy_when_the_new_one_never_completed(tmp_path):
    # Not reachable from one save (COMPLETE is written before the first rename), but a copy of a run
    # dir or a second writer could leave it: an incomplete tmp- never wins over a complete trash copy.
    root = str(tmp_path)
    old = os.path.join(root, f"trash-{METRIC}-123")
    os.makedirs(os.path.join(old, "G"))
    with open(os.path.join(old, ck.COMPLETE), "w") as f:
        f.write('{"format": "%s", "tag": "%s", "serial": 1, "finite": true}' % (ck.FORMAT, METRIC))
    os.makedirs(os.path.join(root, f"tmp-{METRIC}", "G"))  # no COMPLETE
    assert ck.recover_replacements(root) == [METRIC]
    assert ck.find_latest(root) == os.path.join(root, METRIC)
    assert ck.recover_replacements(root) == []  # idempotent


@pytest.mark.multiproc
def test_export_finds_a_best_cut_between_its_renames(tmp_path):
    from textgan.export import find_checkpoint

    root = str(tmp_path)
    assert _run_child(root, "between_the_renames").returncode == -signal.SIGKILL
    best = os.path.join(root, "best", METRIC)
    assert not os.path.exists(best)
    assert find_checkpoint(best) == (best, root)  # `textgan export RUN/best/fid10k` works as before the crash
