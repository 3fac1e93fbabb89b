"""Following a submitted training job on the console until it ends, then saying where things are:
its summary, the failure of each rank, or (after Ctrl-C) what was saved and the command that resumes it."""

import os
import sys
import time

from textgan.launch.interrupt import EXIT_INTERRUPTED, CtrlC, kill_process_tree, resume_command


def wait_and_report(job, run_dir: str, local: bool = False) -> int:
    """Follow rank 0's log on the console until the job ends, then print where things are.
    --local: Ctrl-C saves and stops the job (a second one stops it at once; textgan.launch.interrupt);
    Slurm: Ctrl-C only stops following, the job runs on."""
    # submitit's LocalJob keeps the Popen of its controller (the parent of the ranks) as _process
    ctrl_c = CtrlC(kill_job=lambda: kill_process_tree(job._process.pid)) if local else None
    shown = 0
    try:
        while not job.done():
            shown = print_new(job.paths.stdout, shown)
            time.sleep(1.0)
    except KeyboardInterrupt:  # Slurm only: local jobs are followed under CtrlC
        print(f"\nstopped following job {job.job_id}; it keeps running (scancel {job.job_id} stops it)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if ctrl_c is not None:
            ctrl_c.restore()
    print_new(job.paths.stdout, shown)
    try:
        # results(): one entry per task (rank); job.result() refuses jobs with several tasks.
        # Rank 0's summary is the one to report; results() raises if any rank failed.
        summary = job.results()[0]
    except Exception:
        if ctrl_c is not None and ctrl_c.presses >= 2:  # killed on request, not a failure of the run
            return report_interrupted(None, run_dir)
        print(f"\ntraining failed:\n{failures(job)}\n  full log: {job.paths.stderr}", file=sys.stderr)
        return 1
    if summary.get("interrupted"):
        return report_interrupted(summary["stop_checkpoint"], run_dir)
    print(summary_text(summary))
    return 0


def report_interrupted(saved, run_dir: str) -> int:
    """After Ctrl-C: what was saved and the exact command that continues from it."""
    from textgan.train.checkpoint import find_latest

    if saved:
        print(f"\nstopped by Ctrl-C; the state is saved in {saved}", file=sys.stderr)
    else:
        saved = find_latest(os.path.join(run_dir, "checkpoints"))
        print(f"\nstopped by Ctrl-C without saving; the newest complete checkpoint is {saved or 'none'}",
              file=sys.stderr)
    if saved:
        print(f"resume with:\n  {resume_command(sys.argv, run_dir)}", file=sys.stderr)
    else:
        print("nothing to resume from: run the same command again to start afresh", file=sys.stderr)
    return EXIT_INTERRUPTED


def failures(job) -> str:
    """One line per failed rank: its exception's last line. A rank that fails first makes the others
    fail in their next collective ("Connection reset by peer"), so every rank's reason is shown."""
    lines = []
    for rank in range(job.num_tasks):
        error = job.task(rank).exception()
        if error is not None:
            # submitit's FailedJobError: a header, the traceback between dashed rules, where the logs are
            parts = str(error).split("-" * 22)
            trace = parts[1] if len(parts) >= 3 else str(error)
            last = [line.strip() for line in trace.splitlines() if line.strip()]
            lines.append(f"  rank {rank}: {last[-1] if last else type(error).__name__}")
    return "\n".join(lines) or "  (no rank reported an error; the job ended without a result)"


def print_new(path, offset: int) -> int:
    try:
        with open(path) as f:
            f.seek(offset)
            text = f.read()
    except FileNotFoundError:
        return offset
    sys.stdout.write(text)
    sys.stdout.flush()
    return offset + len(text.encode())


def summary_text(summary: dict) -> str:
    lines = ["", "training finished"]
    for key in ("run_dir", "samples", "tensorboard", "checkpoints", "best_checkpoint", "best_metric", "kimg",
                "shapes_alignment"):
        if key in summary:
            lines.append(f"  {key + ':':<18}{summary[key]}")
    if "tensorboard" in summary:
        lines.append(f"  view with:        tensorboard --logdir {summary['tensorboard']}")
    return "\n".join(lines)
