"""The submission flow both launch commands share (`textgan train`, `textgan sweep`), written once:

    checks (UsageError -> `PROG: error: ...`, exit 2, nothing created)
    -> executor -> submit -> on a refused submission: remove the run/sweep directory made for it while it
       still holds no output, say so, exit 1
    -> print what was submitted and how to follow it.

What each command checks and submits (one run, or a job array of points) stays in train_cmd / sweep_cmd.
"""

import contextlib
import os
import shutil
import sys
from typing import Callable, List, Optional

from textgan.errors import UsageError
from textgan.launch.interrupt import controller_ignoring_ctrl_c

LOGS = "logs"


def usage_error(prog: str, error: UsageError) -> int:
    """Report a failed check the way argparse reports a bad option; the exit code to return (2)."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return error.exit_code


def command_of(prog: str) -> str:
    """How to type the command `prog` names again: a script path runs through python
    ('launchers/sweep.py' -> 'python launchers/sweep.py'), an entry point as is ('textgan sweep')."""
    return f"python {prog}" if prog.endswith(".py") else prog


def submit_jobs(prog: str, what: str, request, log_folder: str, local: bool, submit_all: Callable,
                fresh_dir: Optional[str] = None, array_parallelism: Optional[int] = None,
                ignore_ctrl_c: bool = False) -> Optional[list]:
    """submit_all(executor) -> jobs, on an executor for `request` logging to log_folder; None when the
    executor or the scheduler refused (no sbatch, unknown partition, no such GRES, ...), after saying so.

    fresh_dir: the directory created for this submission; a refusal removes it while it holds nothing but
    submitit's logs (never what a job has written: a local sweep's finished points stay).
    ignore_ctrl_c: a --local job that this command follows under textgan.launch.interrupt.CtrlC, so that
    Ctrl-C reaches the job's ranks through us, not its controller directly."""
    from textgan.launch.slurm import make_executor

    try:
        executor = make_executor(request, log_folder, local=local, array_parallelism=array_parallelism)
        with controller_ignoring_ctrl_c() if ignore_ctrl_c else contextlib.nullcontext():
            return submit_all(executor)
    except Exception as e:
        if fresh_dir is not None and not holds_output(fresh_dir):
            shutil.rmtree(fresh_dir, ignore_errors=True)
        print(f"{prog}: error: the {what} was not submitted: {e}", file=sys.stderr)
        return None


def holds_output(folder: str) -> bool:
    """Whether `folder` holds a file outside its logs/ (what submitit writes there is no output)."""
    for where, dirs, files in os.walk(folder):
        if os.path.relpath(where, folder).split(os.sep)[0] == LOGS:
            dirs[:] = []
            continue
        if files:
            return True
    return False


def print_submitted(title: str, facts: List[tuple], follow: List[str]) -> None:
    """What was submitted: a title line, `label: value` lines aligned, then the commands to follow it."""
    width = max(len(label) for label, _ in facts) + 2
    lines = [title] + [f"  {label + ':':<{width}}{value}" if label else f"  {value}" for label, value in facts]
    if follow:
        lines += ["follow it:"] + [f"  {command}" for command in follow]
    print("\n".join(lines), flush=True)
