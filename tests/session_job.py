"""launchers/submit.py --local (or another program) as a user's terminal runs it: a real subprocess in its own session and
process group (what a shell does for a foreground job), so a test can send signals to the whole group
as Ctrl-C does, find every process the job left behind (controller, ranks, loader workers all stay in
that session), and kill them all if the job hangs.

    job = SessionJob(tmp_path, ["--config", DEMO, "--outdir", out, ...])
    job.wait_for(lambda: "tick 1 " in job.rank0_log(run_dir))
    job.interrupt()                         # Ctrl-C
    code = job.wait(timeout=120)            # fails the test (and kills the job) on a hang
    assert job.leftovers(grace=10) == []
"""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from test_train_e2e import ROOT, SUBMIT


class SessionJob:
    def __init__(self, tmp_path, args, name="job", program=(sys.executable, SUBMIT, "--local")):
        self.out_path = os.path.join(str(tmp_path), f"{name}.stdout")
        self.err_path = os.path.join(str(tmp_path), f"{name}.stderr")
        self.args = [*program, *args]
        # Files, not pipes: a job that writes more than a pipe holds would block while the test polls.
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err, cwd=ROOT, start_new_session=True)
        self.sid = self.proc.pid

    @property
    def stdout(self) -> str:
        with open(self.out_path) as f:
            return f.read()

    @property
    def stderr(self) -> str:
        with open(self.err_path) as f:
            return f.read()

    def processes(self) -> list:
        """Live processes of the job's session (zombies count as gone)."""
        found = []
        for process in psutil.process_iter(["status"]):
            try:
                if os.getsid(process.pid) == self.sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (ProcessLookupError, PermissionError):
                continue
        return found

    def kill_all(self) -> None:
        for process in self.processes():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass

    def wait_for(self, condition, timeout=300, what="the condition") -> None:
        deadline = time.time() + timeout
        while not condition():
            if self.proc.poll() is not None or time.time() > deadline:
                self.kill_all()
                pytest.fail(f"{what} not reached (exit code {self.proc.poll()}):\n{self.stdout[-3000:]}\n"
                            f"{self.stderr[-3000:]}")
            time.sleep(0.1)

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to every process of the foreground process group."""
        os.killpg(self.sid, signal.SIGINT)

    def wait(self, timeout) -> int:
        """submit.py's exit code; a job still running after `timeout` s is killed and fails the test."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            self.proc.wait()
            pytest.fail(f"submit.py still running after {timeout} s (killed):\n{self.stdout[-3000:]}\n"
                        f"{self.stderr[-3000:]}")

    def leftovers(self, grace=10) -> list:
        """The job's processes still alive `grace` s after submit.py returned (then killed)."""
        deadline = time.time() + grace
        while self.processes() and time.time() < deadline:
            time.sleep(0.2)
        left = [(p.pid, " ".join(p.cmdline()[:4])) for p in self.processes()]
        self.kill_all()
        return left


def rank_logs(run_dir: str, suffix: str) -> str:
    """All ranks' logs of a run that end with suffix ("_log.out" / "_log.err"), concatenated."""
    logs = os.path.join(run_dir, "logs")
    names = sorted(f for f in os.listdir(logs) if f.endswith(suffix)) if os.path.isdir(logs) else []
    text = []
    for name in names:
        with open(os.path.join(logs, name), errors="replace") as f:
            text.append(f.read())
    return "\n".join(text)
