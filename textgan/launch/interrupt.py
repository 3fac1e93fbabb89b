"""Ctrl-C on a --local run: the first press saves at the next step boundary and stops, the second stops now.

Ctrl-C sends SIGINT to every process of the terminal's foreground process group. submitit's local
executor starts its controller without a new session, so that is launchers/submit.py, the controller,
every rank and every loader worker. Each has its part:
- the controller must not hear it: on SIGINT it SIGINTs the ranks and SIGKILLs them a second later,
  before they can save. `controller_ignoring_ctrl_c` starts it with SIGINT ignored (inherited through
  fork and exec; Python then installs no KeyboardInterrupt handler), and its ranks inherit that too;
- every rank installs its own handler first thing (textgan.train.preempt): flag -> the ranks agree at
  the next step boundary -> checkpoint with the unfinished tick -> the job ends with a stopped result;
- loader workers ignore SIGINT (textgan.data.loading.loader), so the data keeps flowing until the save;
- submit.py (`CtrlC`) says what the press does, and on the second one kills the job's processes.
"""

import contextlib
import shlex
import signal
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


@contextlib.contextmanager
def controller_ignoring_ctrl_c():
    """Start processes inside this block with SIGINT ignored (see the module docstring)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class CtrlC:
    """Counts Ctrl-C presses while submit.py follows a local job; `kill_job` is called on the second."""

    def __init__(self, kill_job, out=sys.stderr):
        self.presses = 0
        self.kill_job = kill_job
        self.out = out
        self.previous = signal.signal(signal.SIGINT, self._pressed)

    def _pressed(self, signum, frame) -> None:
        self.presses += 1
        if self.presses == 1:
            print("\nCtrl-C: saving a checkpoint at the next step boundary, then stopping "
                  "(press Ctrl-C again to stop without saving)", file=self.out, flush=True)
        elif self.presses == 2:
            print("\nCtrl-C again: stopping the job now, without waiting for the save", file=self.out, flush=True)
            self.kill_job()

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self.previous)


def kill_process_tree(pid: int) -> None:
    """SIGKILL pid and all its descendants (the controller, its ranks and their loader workers).
    psutil comes with DeepSpeed."""
    import psutil

    try:
        root = psutil.Process(pid)
        family = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(family, timeout=10)


def resume_command(argv, run_dir: str, python=sys.executable) -> str:
    """The command line that continues run_dir: this invocation's argv with `--resume run_dir` in place
    of any --resume, shell-quoted so that it can be pasted as is (from the same working directory)."""
    args, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            args.append(arg)
    return shlex.join([python, argv[0], *args, "--resume", run_dir])
