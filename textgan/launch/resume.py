"""Which run directory a submission trains in, and what it resumes from.

    --resume (absent)   a new numbered run directory
    --resume auto       the newest run in --outdir with the same description that has a complete
                        checkpoint (continue it); else the newest abandoned one (restart in it, see
                        choose_run_dir); else a new run
    --resume RUN_DIR    continue that run from its newest complete checkpoint
    --resume CHECKPOINT a complete checkpoint RUN_DIR/checkpoints/<tag>: continue the run that holds it,
                        from this checkpoint
(textgan.launch.train_cmd's --resume help and the README's Training section say the same.)
The training job itself is then told "auto" (or the checkpoint path), and a requeued attempt
uses the same directory: the run directory is fixed when the job is submitted.

choose_run_dir only looks (a --dry-run shows its choice); resolve_run_dir then acts on the choice.
"""

import dataclasses
import datetime
import os
import re
import shutil
from typing import List, Optional

from textgan.errors import UsageError
from textgan.train.job_state import live_jobs
from textgan.train.rundir import create_run_dir, sanitize_desc

LOGS = "logs"
CHECKPOINTS = "checkpoints"
ABANDONED_PREFIX = "abandoned-"


@dataclasses.dataclass
class RunDirChoice:
    run_dir: Optional[str]  # None: a new numbered run directory in outdir
    resume: Optional[str]  # None (a new run), "auto" (its newest checkpoint, if any) or a checkpoint directory
    reuse: bool = False  # run_dir was abandoned before its first checkpoint: a new run restarts in it
    notes: List[str] = dataclasses.field(default_factory=list)  # what was found, for the launcher to print


def choose_run_dir(outdir: str, desc: str, resume) -> RunDirChoice:
    """Where the submission trains; creates and changes nothing.

    --resume auto, among the runs `outdir/NNNNN-desc`, newest first:
    1. the newest run with a complete checkpoint is continued (as before: a newer run without one
       does not hide it);
    2. else the newest *abandoned* run is reused: a new run restarts in it. Abandoned means no
       complete checkpoint AND no job that may still use it. The jobs are those submitit recorded in
       its logs/ (`<id>_submitted.pkl`); a Slurm job (it has `<id>_submission.sh`) may still use it
       unless squeue reports it ended or unknown, a local job unless its controller process
       (`submitit.local._local`, pid = job id) is gone from this machine. A job whose state cannot be
       learnt (no squeue, squeue failing) counts as alive: a pending or running job that has not yet
       saved must never get a second job in its directory. Runs skipped for that reason are named in
       the notes;
    3. else a new numbered run.
    """
    if resume is None:
        return RunDirChoice(None, None)
    if resume != "auto":
        return _explicit(resume)
    from textgan.train.checkpoint import find_latest  # torch: loaded only when a resume is asked for

    # exactly NNNNN-desc: a sweep directory NNNNN-sweep-desc or a run NNNNN-other-desc is another run
    desc = sanitize_desc(desc)
    same = re.compile(r"\d+" + (f"-{re.escape(desc)}" if desc else ""))  # as rundir.create_run_dir names them
    runs = sorted(d for d in os.listdir(outdir) if same.fullmatch(d)) if os.path.isdir(outdir) else []
    for name in reversed(runs):
        run_dir = os.path.join(outdir, name)
        if find_latest(os.path.join(run_dir, CHECKPOINTS)):
            return RunDirChoice(run_dir, "auto")
    notes = []
    for name in reversed(runs):
        run_dir = os.path.join(outdir, name)
        alive = live_jobs(os.path.join(run_dir, LOGS))
        if alive:
            notes.append(f"not reusing {run_dir} (no checkpoint yet): {'; '.join(alive)}")
            continue
        # resume "auto": the job starts fresh (there is no checkpoint) and a requeue continues its own
        # checkpoints; and a failed submission must not delete what the earlier attempt left
        return RunDirChoice(run_dir, "auto", reuse=True, notes=notes + [_reuse_note(run_dir)])
    return RunDirChoice(None, None, notes=notes)


def _explicit(resume: str) -> RunDirChoice:
    from textgan.train.checkpoint import complete_checkpoints, find_latest

    path = os.path.abspath(resume)
    if os.path.isdir(os.path.join(path, CHECKPOINTS)):
        if not find_latest(os.path.join(path, CHECKPOINTS)):
            raise UsageError(f"--resume {resume}: the run has no complete checkpoint yet; start it again without "
                             "--resume (or with --resume auto, which restarts in it once its job has ended)")
        return RunDirChoice(path, "auto")
    parent = os.path.dirname(path)
    if os.path.basename(parent) == CHECKPOINTS and path in [p for _, p in complete_checkpoints(parent)]:
        return RunDirChoice(os.path.dirname(parent), path)
    raise UsageError(f"--resume {resume}: neither a run directory with checkpoints/ nor a complete checkpoint; "
                     "use --resume auto, a run directory, or runs/<run>/checkpoints/<tag>")


def _stale(run_dir: str) -> list:
    """What an abandoned run left besides its logs: [(name, bytes)], incomplete checkpoints first."""
    found = []
    ckpt_root = os.path.join(run_dir, CHECKPOINTS)
    if os.path.isdir(ckpt_root):
        found += [(os.path.join(CHECKPOINTS, n), _size(os.path.join(ckpt_root, n)))
                  for n in sorted(os.listdir(ckpt_root))]
    found += [(n, _size(os.path.join(run_dir, n))) for n in sorted(os.listdir(run_dir))
              if n not in (LOGS, CHECKPOINTS) and not n.startswith(ABANDONED_PREFIX)]
    return found


def _size(path: str) -> int:
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _reuse_note(run_dir: str) -> str:
    stale = _stale(run_dir)
    left = ", ".join(f"{n} ({b / 1e6:.1f} MB)" for n, b in stale) if stale else "only its logs"
    return (f"reusing {run_dir}: its job ended before the first complete checkpoint, so a new run restarts in it "
            f"(left behind: {left}; incomplete checkpoints are deleted, other files moved to "
            f"{ABANDONED_PREFIX}<time>/, logs/ kept)")


def reset_abandoned(run_dir: str) -> None:
    """Make an abandoned run dir look like a fresh one: delete the incomplete checkpoints (tmp-*, trash-*:
    nothing can load them), move the aborted attempt's other output (stats.jsonl would otherwise be
    appended to, fakes and TensorBoard events mixed with the new run's) into abandoned-<utc>/; keep logs/."""
    shutil.rmtree(os.path.join(run_dir, CHECKPOINTS), ignore_errors=True)
    rest = [n for n, _ in _stale(run_dir) if not n.startswith(CHECKPOINTS)]
    if rest:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = os.path.join(run_dir, ABANDONED_PREFIX + stamp)
        os.mkdir(aside)
        for name in rest:
            os.rename(os.path.join(run_dir, name), os.path.join(aside, name))


def resolve_run_dir(outdir: str, desc: str, resume, log=print):
    """(run_dir, resume) where resume is None, "auto" or a checkpoint directory; creates a new run dir or
    resets an abandoned one (choose_run_dir) and logs what it found."""
    choice = choose_run_dir(outdir, desc, resume)
    for note in choice.notes:
        log(note)
    if choice.run_dir is None:
        return create_run_dir(outdir, desc), None
    if choice.reuse:
        reset_abandoned(choice.run_dir)
    return choice.run_dir, choice.resume
