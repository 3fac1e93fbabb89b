"""The callable that submitit runs on every rank of a training job.

It carries only plain data (the resolved config as YAML, the run directory, what to resume
from), so it pickles small and the same object works under Slurm and the local executor.
Rank and world come from the job environment, never from this object.
"""

import os

from omegaconf import OmegaConf

from textgan.config import TrainConfig, validate


class Trainer:
    def __init__(self, config_yaml: str, run_dir: str, resume=None, init_from=None, argv=None):
        self.config_yaml = config_yaml
        self.run_dir = os.path.abspath(run_dir)
        self.resume = resume
        self.init_from = init_from
        self.argv = list(argv or [])

    def config(self):
        cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.create(self.config_yaml))
        validate(cfg)
        return cfg

    def __call__(self) -> dict:
        _export_submitit_rank_env()
        from textgan.runtime import Runtime
        from textgan.train.loop import training_loop

        runtime = Runtime.from_env()
        runtime.init_distributed()
        finished = False
        try:
            result = training_loop(self.config(), runtime, self.run_dir, resume=self.resume,
                                   init_from=self.init_from, argv=self.argv)
            finished = True
            return result
        finally:
            # Tear the process group down on every rank: a gloo group left to the interpreter's exit
            # can abort one rank while another is still leaving, and the job then fails although
            # training finished. After a failure, skip shutdown's barrier (the other ranks may be
            # stuck in a different collective, or gone) and let the original error surface.
            if finished:
                runtime.shutdown()
            else:
                _destroy_process_group_quietly()


def _destroy_process_group_quietly() -> None:
    import torch.distributed as dist

    try:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # best effort while an exception is already on its way out
        pass


def _export_submitit_rank_env() -> None:
    """Inside a submitit job (Slurm or local), publish RANK / WORLD_SIZE / LOCAL_RANK /
    MASTER_ADDR / MASTER_PORT the way torchrun would, so Runtime and DeepSpeed see one world.
    Outside a job (a plain process, torchrun) there is nothing to do."""
    import submitit

    try:
        env = submitit.helpers.TorchDistributedEnvironment()
    except RuntimeError:  # not inside a submitit job
        return
    # Keep the device assignment to Runtime (cuda:local_rank); submitit's own masking of
    # CUDA_VISIBLE_DEVICES would renumber devices under our feet.
    env.export(set_cuda_visible_devices=False)
