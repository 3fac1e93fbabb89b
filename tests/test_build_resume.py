"""Resume and safety: kill -9, Ctrl-C, crash leftovers, disk full and read-only output.

The promise under test: whatever stops a build, no half shard counts as done, and rerunning
the same command ends with exactly the files of an uninterrupted build.
"""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from build_util import popen_build, read_bytes, run_build, shard_files

from textgan.data.building.cli import main
from textgan.data.building.builder import BuildConfig, build

BIG = ["shapes", "--n", 1500, "--resolution", 32, "--samples-per-shard", 50, "--no-progress"]


def assert_no_half_shard_counts_as_done(out):
    """Every tar present has a record whose size matches it; no manifest; report the tars."""
    names = os.listdir(out)
    assert "manifest.json" not in names
    tars = sorted(n for n in names if n.endswith(".tar"))
    for name in tars:
        with open(os.path.join(out, name + ".record.json")) as f:
            record = json.load(f)
        assert record["size"] == os.path.getsize(os.path.join(out, name)), name
    return tars


def _wait_for_first_shard(proc, out):
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(n.endswith(".tar") for n in os.listdir(out))):
        assert proc.poll() is None, f"build ended before it could be stopped: {proc.communicate()}"
        assert time.monotonic() < deadline, "no shard appeared within 120 s"
        time.sleep(0.01)


def _start_and_stop_after_first_shard(out, sig, args=BIG):
    proc = popen_build(*args, "--outdir", out, "--workers", 2, start_new_session=True)
    try:
        _wait_for_first_shard(proc, out)
        os.killpg(proc.pid, sig)  # the whole group, like Slurm or a terminal does
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, stdout, stderr


def test_kill_9_then_rerun_ends_with_the_uninterrupted_result(tmp_path):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    code, _, _ = _start_and_stop_after_first_shard(killed, signal.SIGKILL)
    assert code == -signal.SIGKILL
    finished = assert_no_half_shard_counts_as_done(killed)
    assert 1 <= len(finished) < 30

    proc = run_build(*BIG, "--outdir", killed, "--workers", 2)
    assert proc.returncode == 0, proc.stderr
    assert f"{30 - len(finished)} written now, {len(finished)} from an earlier run" in proc.stdout
    assert run_build(*BIG, "--outdir", reference, "--workers", 1).returncode == 0
    assert shard_files(killed) == shard_files(reference)  # manifest, tars, records: byte for byte
    assert not [n for n in os.listdir(killed) if n.endswith(".tmp")]


def test_ctrl_c_exits_130_and_leaves_no_tmp(tmp_path):
    out = tmp_path / "out"
    code, _, stderr = _start_and_stop_after_first_shard(out, signal.SIGINT)
    assert code == 130 and "rerun the same command to resume" in stderr
    assert_no_half_shard_counts_as_done(out)
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_leftovers_of_a_crash_are_redone_exactly(tmp_path):
    """The states a kill can leave, made on purpose: a record whose tar was never renamed into
    place, a half-written tmp, a truncated tar, a half-written record tmp, no manifest."""
    reference, out = tmp_path / "reference", tmp_path / "out"
    cfg = dict(source="shapes", n=60, resolution=16, samples_per_shard=10, workers=1, progress=False)
    build(BuildConfig(out=str(reference), **cfg))
    shutil.copytree(reference, out)
    os.remove(out / "manifest.json")
    tar1 = read_bytes(out / "train-000001.tar")
    os.remove(out / "train-000001.tar")
    (out / "train-000001.tar.tmp").write_bytes(tar1[: len(tar1) // 2])
    (out / "train-000002.tar").write_bytes(read_bytes(out / "train-000002.tar")[:4096])
    (out / "train-000003.tar.record.json.tmp").write_text('{"name": "train-0')

    result = build(BuildConfig(out=str(out), **cfg))
    assert (result.state, result.shards_written, result.shards_reused) == ("resume", 2, 4)
    assert result.stale_tmp_removed == ["train-000001.tar.tmp", "train-000003.tar.record.json.tmp"]
    assert shard_files(out) == shard_files(reference)


def test_a_lost_shard_of_a_finished_build_is_rebuilt(tmp_path):
    cfg = BuildConfig(source="shapes", out=str(tmp_path / "out"), n=30, resolution=16, samples_per_shard=10,
                      workers=1, progress=False)
    build(cfg)
    before = shard_files(tmp_path / "out")
    os.remove(tmp_path / "out" / "train-000001.tar")
    result = build(cfg)
    assert (result.state, result.shards_written, result.shards_reused) == ("resume", 1, 2)
    assert shard_files(tmp_path / "out") == before
    assert build(cfg).state == "complete"


# ---------------------------------------------------------------- real file systems


@pytest.fixture
def tmpfs(tmp_path):
    """mount(options) mounts a fresh tmpfs on tmp_path/mnt (remount with remount=True)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the tests run as root in CI)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def mount(options, remount=False):
        opts = ("remount," if remount else "") + options
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        return mnt

    try:
        yield mount
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_stops_cleanly_and_rerun_completes(tmpfs, tmp_path):
    args = ["shapes", "--n", 400, "--resolution", 32, "--samples-per-shard", 50, "--no-progress", "--workers", 1]
    out = tmpfs("size=600k") / "out"
    proc = run_build(*args, "--outdir", out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no space left on the device (the disk is full)" in proc.stderr
    assert "rerunning the same command resumes" in proc.stderr
    assert f"cannot write {out}{os.sep}train-0000" in proc.stderr  # names the shard being written
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    finished = assert_no_half_shard_counts_as_done(out)
    assert 1 <= len(finished) < 8

    tmpfs("ro", remount=True)  # now unwritable: the rerun must say so, and keep what is there
    proc = run_build(*args, "--outdir", out)
    assert proc.returncode == 1 and "read-only" in proc.stderr
    assert assert_no_half_shard_counts_as_done(out) == finished

    tmpfs("rw,size=20m", remount=True)
    proc = run_build(*args, "--outdir", out)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(finished)} from an earlier run" in proc.stdout
    assert main([*map(str, args), "--outdir", str(tmp_path / "reference")]) == 0
    assert shard_files(out) == shard_files(tmp_path / "reference")


def test_read_only_output_is_refused_before_any_work(tmpfs):
    mnt = tmpfs("ro,size=1m")
    args = ["shapes", "--n", 10, "--resolution", 16, "--no-progress", "--workers", 1]
    proc = run_build(*args, "--outdir", mnt / "out")
    assert proc.returncode == 2
    assert "cannot create the output directory" in proc.stderr and "read-only" in proc.stderr
    proc = run_build(*args, "--outdir", mnt)
    assert proc.returncode == 2
    assert "cannot write into the output directory" in proc.stderr and "read-only" in proc.stderr
    assert os.listdir(mnt) == []


def _worker_pids(build_pid):
    """The build's image workers. Its direct children are the forkserver and multiprocessing's
    resource tracker; the workers are the forkserver's children, so: grandchildren."""
    import psutil

    return [g.pid for child in psutil.Process(build_pid).children() for g in child.children()]


def test_a_dead_worker_stops_the_build_with_a_clear_error_and_rerun_completes(tmp_path):
    """A worker killed from outside (as the OOM killer does) must not hang the build."""
    out, reference = tmp_path / "crashed", tmp_path / "reference"
    proc = popen_build(*BIG, "--outdir", out, "--workers", 2, start_new_session=True)
    try:
        _wait_for_first_shard(proc, out)
        workers = _worker_pids(proc.pid)
        assert workers, "found no worker process to kill"
        os.kill(workers[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)  # a hang here is the bug this test guards
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, stderr
    assert "worker process died" in stderr and "rerun the same command to resume" in stderr
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    assert_no_half_shard_counts_as_done(out)

    assert run_build(*BIG, "--outdir", out, "--workers", 2).returncode == 0
    assert run_build(*BIG, "--outdir", reference, "--workers", 1).returncode == 0
    assert read_bytes(out / "manifest.json") == read_bytes(reference / "manifest.json")
