"""Launching training jobs: the Slurm request (sbatch options through submitit), sweep grids,
and the results table of a sweep. Nothing here imports torch or DeepSpeed: a login node only
builds requests."""
