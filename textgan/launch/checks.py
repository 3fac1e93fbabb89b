"""The checks that both launch commands (textgan train, textgan sweep) run before a job exists, --dry-run included.

Each one only reads: a failing one raises UsageError (exit 2) and nothing has been created, no run
directory and no shards (the demo's shards are checked as they will be built, and built only after every
check passed). What a job would otherwise find out on a compute node, after its run directory exists:
a text encoder or weights file that cannot load, shards that do not fit the config, a --local job asking
for GPUs this machine does not have (it would train on the CPU), a value that cannot go into a batch script.
"""

from typing import Optional

from textgan.errors import UsageError
from textgan.launch.slurm import SlurmRequest, render_sbatch, require_slurm


def check_config_resources(cfg) -> dict:
    """Text encoder, shards (training and held-out) and contrastive settings of one config; returns the training
    shards' manifest (the planned one when the demo's shards are still to be built)."""
    from textgan.launch.prepare import check_contrastive, check_text_encoder, check_val_shards, ensure_shards

    check_text_encoder(cfg)
    manifest = ensure_shards(cfg, build=False)
    check_val_shards(cfg, manifest)
    check_contrastive(cfg, manifest)
    return manifest


def check_request(request: SlurmRequest, local: bool, dry_run: bool, log_folder: str,
                  array_size: Optional[int] = None, array_parallelism: Optional[int] = None) -> Optional[str]:
    """The job request where it will run. --local: this machine has the GPUs asked for. Slurm: the batch
    script renders (every value one quoted line, see textgan.launch.slurm) and, unless dry_run, sbatch
    is on PATH. Returns the script (None for --local)."""
    if local:
        check_local_gpus(request.gpus_per_node)
        return None
    script = render_sbatch(request, log_folder, array_size=array_size, array_parallelism=array_parallelism)
    if not dry_run:
        require_slurm()
    return script


def check_local_gpus(gpus_per_node: int) -> None:
    if not gpus_per_node:
        return
    import torch

    have = torch.cuda.device_count()
    if have < gpus_per_node:
        raise UsageError(f"--gpus-per-node {gpus_per_node} with --local, but this machine has {have} CUDA GPU(s), "
                         "so the job would train on the CPU: leave --gpus-per-node out to train on the CPU, or "
                         "submit to Slurm (without --local)")
