"""The callable that submitit runs on every rank of a training job.

It carries only plain data (the resolved config as YAML, the run directory, what to resume
from, the requeue budget), so it pickles small and the same object works under Slurm and the local
executor. Rank and world come from the job environment, never from this object.

Ctrl-C (textgan.train.preempt): every rank saves at the next step boundary, as for a preemption, and
the job ends with the stopped result ("interrupted": True) instead of requeueing.

Preemption and time limits (textgan.train.preempt): every rank saves the full state at the next step
boundary, then submitit calls `checkpoint()`, which returns the same Trainer with resume='auto' on the
same run directory, and requeues the job. A job that Slurm restarts by itself (node failure,
`scontrol requeue`) runs the original submission again: it too resumes from the newest complete
checkpoint of its run directory, because a fixed run directory with checkpoints can only hold this job's.
"""

import datetime
import json
import os

from omegaconf import OmegaConf

from textgan.config import TrainConfig
from textgan.train.heartbeat import attempt_resources, error_line, job_identity, next_attempt, record_attempt
from textgan.train.preempt import REQUEUE_LOG


class Trainer:
    def __init__(self, config_yaml: str, run_dir: str, resume=None, init_from=None, argv=None, max_requeues=10):
        self.config_yaml = config_yaml
        self.run_dir = os.path.abspath(run_dir)
        self.resume = resume
        self.init_from = init_from
        self.argv = list(argv or [])
        self.max_requeues = max_requeues

    def config(self):
        """The typed config of config_yaml, merged onto the schema (types, defaults) but not validated again:
        the launcher validated this very YAML once before submitting (load_config, the world-size scaling,
        the resource checks), and it cannot change on the way. Validating again here would repeat the
        checks on every rank and attempt, and a check that differs between the two places could refuse a
        job on a compute node that its --dry-run had accepted."""
        return OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.create(self.config_yaml))

    def __call__(self) -> dict:
        from textgan.train.preempt import PreemptionWatch, in_submitit_job

        # First thing: a signal during start-up must not be lost (it is acted on at the first iteration).
        watch = PreemptionWatch() if in_submitit_job() else None
        _export_submitit_rank_env()
        from textgan.runtime import Runtime
        from textgan.train.loop import training_loop

        runtime = Runtime.from_env()
        resume = self.resume_for_this_attempt()
        identity = job_identity(attempt=next_attempt(self.run_dir))
        if runtime.is_main:
            print(_attempt_banner(self.run_dir, resume, identity["attempt"]), flush=True)
            record_attempt(self.run_dir, "start", identity, resume=None if resume is None else str(resume),
                           **attempt_resources(runtime))
        ended = (lambda outcome, **f: record_attempt(self.run_dir, "end", identity, outcome=outcome, **f)
                 ) if runtime.is_main else (lambda outcome, **f: None)
        runtime.init_distributed()
        finished = False
        try:
            result = training_loop(self.config(), runtime, self.run_dir, resume=resume, init_from=self.init_from,
                                   argv=self.argv, stop_requested=watch.stop_requested(runtime) if watch else None,
                                   identity=identity)
            finished = True
        except BaseException as e:
            ended("failed", error=error_line(e))
            raise
        finally:
            # Tear the process group down on every rank: a gloo group left to the interpreter's exit
            # can abort one rank while another is still leaving, and the job then fails although
            # training finished. After a failure, skip shutdown's barrier (the other ranks may be
            # stuck in a different collective, or gone) and let the original error surface.
            if not finished:
                _destroy_process_group_quietly()
        if result.get("stopped") and watch.interrupted:  # Ctrl-C: saved; the launcher says how to resume
            ended("interrupted", kimg=result["kimg"])
            runtime.shutdown()
            return dict(result, interrupted=True)
        if result.get("stopped"):
            cause = watch.requeue_cause() if runtime.is_main else None
            try:
                watch.finish_interrupted(runtime)  # requeues (or says why not); never returns
            except SystemExit:
                ended("requeued", kimg=result["kimg"], cause=cause)
                raise
            except BaseException as e:
                ended("failed", error=error_line(e), kimg=result["kimg"], cause=cause)
                raise
        ended("completed", kimg=result["kimg"])
        if watch is not None:
            watch.ignore_further_signals()  # training is complete: a late warning must not kill the exit
        runtime.shutdown()
        return result

    def resume_for_this_attempt(self):
        """self.resume, except that a fresh run whose directory already holds a complete checkpoint is a
        restart of this very job (Slurm requeued it without asking us): continue it."""
        from textgan.train.checkpoint import find_latest

        if self.resume is None and find_latest(os.path.join(self.run_dir, "checkpoints")):
            return "auto"
        return self.resume

    def checkpoint(self):
        """submitit's hook, called on the first task after every rank has saved (see preempt.py): the
        submission for the next attempt, or None (no requeue) once max_requeues is used up."""
        import submitit

        done = requeue_count(self.run_dir)
        if done >= self.max_requeues:
            print(f"not requeueing: this run was requeued {done} time(s), max_requeues={self.max_requeues}; "
                  f"its state is saved: continue with --resume {self.run_dir}", flush=True)
            return None
        record = {"requeue": done + 1, "job_id": os.environ.get("SLURM_JOB_ID") or os.environ.get(
            "SUBMITIT_LOCAL_JOB_ID"), "restart_count": int(os.environ.get("SLURM_RESTART_COUNT") or 0),
            "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        with open(os.path.join(self.run_dir, REQUEUE_LOG), "a") as f:
            f.write(json.dumps(record) + "\n")
        following = Trainer(self.config_yaml, self.run_dir, resume="auto", init_from=self.init_from,
                            argv=self.argv, max_requeues=self.max_requeues)
        return submitit.helpers.DelayedSubmission(following)


def requeue_count(run_dir: str) -> int:
    try:
        with open(os.path.join(run_dir, REQUEUE_LOG)) as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def _attempt_banner(run_dir: str, resume, attempt: int) -> str:
    """One line per attempt in the (appended) log, so the attempts of a requeued job stay apart."""
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or "-"
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    now = datetime.datetime.now().isoformat(timespec="seconds")
    return (f"==== textgan attempt {attempt} (job {job}, Slurm restart count {restarts}, "
            f"{now}): {'resuming ' + str(resume) if resume else 'new run'} in {run_dir} ====")


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
