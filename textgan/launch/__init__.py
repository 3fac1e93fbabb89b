"""Launching training jobs: `textgan train` and `textgan sweep` (train_cmd, sweep_cmd; launchers/ wraps
them), the checks and flow they share (checks, prepare, resume, submission, follow), the Slurm request
(sbatch options through submitit), sweep grids, and the results table of a sweep. Importing a module
here loads neither torch nor DeepSpeed (a login node only builds requests, and --help stays instant);
the few checks that need torch import it when they run."""
