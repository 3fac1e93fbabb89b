"""Which run directory a submission trains in, and what it resumes from.

    --resume (absent)   a new numbered run directory
    --resume auto       the newest run in --outdir with the same description that has a complete
                        checkpoint (continue it); a new run when there is none
    --resume RUN_DIR    continue that run from its newest complete checkpoint
    --resume CKPT_DIR   continue the run that holds this checkpoint, from this checkpoint
The training job itself is then told "auto" (or the checkpoint path), and a requeued attempt
uses the same directory: the run directory is fixed when the job is submitted.
"""

import os

from textgan.errors import UsageError
from textgan.train.checkpoint import complete_checkpoints, find_latest
from textgan.train.rundir import create_run_dir, sanitize_desc


def resolve_run_dir(outdir: str, desc: str, resume):
    """(run_dir, resume) where resume is None, "auto" or a checkpoint directory."""
    if resume is None:
        return create_run_dir(outdir, desc), None
    if resume == "auto":
        suffix = f"-{sanitize_desc(desc)}"
        runs = sorted(d for d in os.listdir(outdir) if d.endswith(suffix)) if os.path.isdir(outdir) else []
        for name in reversed(runs):
            run_dir = os.path.join(outdir, name)
            if find_latest(os.path.join(run_dir, "checkpoints")):
                return run_dir, "auto"
        return create_run_dir(outdir, desc), None
    path = os.path.abspath(resume)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        if not find_latest(os.path.join(path, "checkpoints")):
            raise UsageError(f"--resume {resume}: the run has no complete checkpoint yet; start it again without --resume")
        return path, "auto"
    parent = os.path.dirname(path)
    if os.path.basename(parent) == "checkpoints" and path in [p for _, p in complete_checkpoints(parent)]:
        return os.path.dirname(parent), path
    raise UsageError(f"--resume {resume}: neither a run directory with checkpoints/ nor a complete checkpoint; "
                     "use --resume auto, a run directory, or runs/<run>/checkpoints/<tag>")
