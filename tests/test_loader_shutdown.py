"""Loader workers end with the trainer: close() stops them at once, a process whose iterator is still alive
at exit (kept by an error's traceback) still exits. That they survive the job's signals until then:
tests/test_loader.py.

Workers ignore SIGTERM and SIGINT (a preemption and Ctrl-C reach every process of the job), which is
why nothing but an explicit stop ends them while their parent lives.
"""

import os
import sys
import textwrap
import time

import psutil
import pytest

from session_job import SessionJob
from shard_fixture import write_shards
from test_loader import _assert_same_batches, _take
from textgan.data.loading.loader import train_loader


def _new_children(before) -> list:
    return [p for p in psutil.Process().children() if p.pid not in before]


def _gone(processes, timeout) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return not alive


@pytest.mark.multiproc
def test_close_stops_the_workers_at_once_and_a_new_iterator_continues_where_the_last_batch_left_off(tmp_path):
    write_shards(tmp_path, 40, 8)
    reference = _take(train_loader(tmp_path, 4, seed=3, num_workers=2), 6)
    before = {p.pid for p in psutil.Process().children()}
    loader = train_loader(tmp_path, 4, seed=3, num_workers=2)
    it = iter(loader)
    got = [next(it) for _ in range(3)]
    workers = _new_children(before)
    assert len(workers) == 2

    started = time.time()
    loader.close()
    assert _gone(workers, timeout=1) and time.time() - started < 10
    with pytest.raises(RuntimeError, match="superseded by .* close()"):
        next(it)
    it = iter(loader)
    got += [next(it) for _ in range(3)]
    _assert_same_batches(got, reference)
    loader.close()


@pytest.mark.slow
@pytest.mark.multiproc
@pytest.mark.parametrize("kind", ["train", "eval"])
def test_a_process_that_dies_of_an_error_while_its_loader_iterates_exits_within_seconds(tmp_path, kind):
    # The uncaught error's traceback keeps the iterator (and its workers) alive until the interpreter's
    # exit, where multiprocessing would SIGTERM the workers (ignored) and join them forever.
    write_shards(tmp_path / "shards", 64, 8)
    make = {"train": "train_loader(shards, 4, num_workers=2)", "eval": "eval_loader(shards, 4, num_workers=2)"}[kind]
    script = textwrap.dedent(f"""
        from textgan.data.loading.loader import eval_loader, train_loader
        shards = {str(tmp_path / "shards")!r}
        batches = iter({make})
        next(batches)
        raise RuntimeError("boom while training")
    """)
    job = SessionJob(tmp_path, ["-c", script], program=(sys.executable,))
    code = job.wait(timeout=60)
    assert code == 1 and "RuntimeError: boom while training" in job.stderr
    assert job.leftovers(grace=5) == []


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_pytest_session_whose_failed_tests_held_batches_still_exits(tmp_path):
    # Failed tests that held batches: pytest keeps their reports, the loaders' iterators are dropped, and a
    # worker blocked on its full queue is reachable through no live iterator, yet the interpreter's exit would
    # join it forever (it ignores SIGTERM). The exit handler kills every loader worker left.
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    (tmp_path / "test_holding.py").write_text(textwrap.dedent(f"""
        import itertools, sys
        sys.path.insert(0, {tests_dir!r})
        from shard_fixture import write_shards
        from textgan.data.loading.loader import train_loader

        def test_fail_while_holding(tmp_path):
            write_shards(tmp_path, 60, 10)
            it = iter(train_loader(tmp_path, 5, seed=2, num_workers=1))
            held = [next(it) for _ in range(3)]
            assert False, "boom"

        def test_fail_while_holding_many(tmp_path):
            write_shards(tmp_path, 60, 10)
            it = iter(train_loader(tmp_path, 5, seed=2, num_workers=1))
            held = [next(it) for _ in range(11)]
            views = [b["pixels"][1:3] for b in itertools.islice(it, 16)]
            assert False, "boom"
    """))
    job = SessionJob(tmp_path, ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_holding.py")],
                     program=(sys.executable,))
    code = job.wait(timeout=120)
    assert code == 1 and "2 failed" in job.stdout
    assert job.leftovers(grace=5) == []
