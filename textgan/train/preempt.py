"""Preemption and time limits under submitit: every rank saves at the same step boundary, then the job requeues.

How submitit does it alone: Slurm sends USR2 (`--signal=USR2@delay`) to every task; submitit's handler on
the first task calls the callable's `checkpoint()`, writes the returned submission over the job's pickle,
runs `scontrol requeue` and exits; the handlers of the other tasks only log. The state is whatever
checkpoint() saved from inside a signal handler, at an arbitrary point of a step, on one rank: useless for
a DeepSpeed job whose optimizer state is partitioned over all ranks.

What we do instead (PreemptionWatch):
1. On every rank, USR2 only raises a flag (installed over submitit's handler, which is kept).
2. At the top of every iteration the ranks agree with one all-reduce (max) whether any flag is up
   (`stop_requested`, passed to the training loop); then all of them save a full checkpoint together,
   including the partial tick's statistics, and leave the loop.
3. `finish_interrupted`: the first task now runs submitit's own handler, which calls Trainer.checkpoint()
   (a submission of the same run with resume='auto'), requeues (Slurm: `scontrol requeue`; local
   executor: exit code 144) and exits. Its outcome is shared with the other ranks before anyone leaves, so
   no rank exits while the requeue is still being requested.
SIGTERM (what Slurm sends first on preemption, and at cancellation) stays with submitit, which ignores it.

Ctrl-C (SIGINT; on a --local run the terminal sends it to every process of the job) takes the same
path up to the checkpoint, then stops without requeueing: the Trainer returns the stopped result and
launchers/submit.py prints how to resume. The first SIGINT on a rank raises its flag and restores the
default action, so a second one ends the rank at once, even inside a blocking collective.
When the ranks' causes differ, Ctrl-C wins: a user who stops a run does not want it requeued.
"""

import os
import signal

import torch

PREEMPTED, INTERRUPTED = 1, 2  # why a stop was requested; the ranks agree on the largest
REQUEUE_LOG = "requeues.jsonl"  # one line per requeue requested for a run (our own count: submitit counts
#                                 only time-outs, and preemptions would otherwise requeue forever)


class JobNotRequeued(RuntimeError):
    """Training stopped for a preemption/time limit, its state is saved, but the job was not requeued."""


def in_submitit_job() -> bool:
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


class PreemptionWatch:
    """Installs flag-raising handlers for submitit's preemption signal and for Ctrl-C on this rank."""

    def __init__(self):
        import submitit

        self.signum = submitit.JobEnvironment._usr_sig()
        self.submitit_handler = signal.getsignal(self.signum)
        self.requested = 0  # this rank's cause (PREEMPTED / INTERRUPTED), 0 while none
        self.cause = 0  # the cause the ranks agreed on at the last stop_requested() check
        self.pid = os.getpid()
        signal.signal(self.signum, self._raise_flag)
        signal.signal(signal.SIGINT, self._interrupt)

    @property
    def interrupted(self) -> bool:
        """The agreed stop came from Ctrl-C: save and stop, do not requeue."""
        return self.cause == INTERRUPTED

    def _interrupt(self, signum, frame) -> None:
        if os.getpid() != self.pid:  # a forked DataLoader worker before it ignores SIGINT: not its business
            return
        self.requested = max(self.requested, INTERRUPTED)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the second Ctrl-C stops this rank now, without saving
        os.write(2, b"textgan: Ctrl-C: saving a checkpoint at the next step boundary, then stopping; "
                    b"Ctrl-C again stops without saving\n")

    def _raise_flag(self, signum, frame) -> None:
        if os.getpid() != self.pid:  # a forked DataLoader worker inherited the handler: stay quiet
            return
        self.requested = max(self.requested, PREEMPTED)
        # os.write, not print: a print from a handler can collide with a print the main code was making
        os.write(2, f"textgan: received {signal.Signals(signum).name}: saving a checkpoint at the next step "
                    "boundary, then requeueing\n".encode())

    def ignore_further_signals(self) -> None:
        """After the last step: ignore the signal from now on. A time-limit warning can arrive while a
        finished job writes its result and exits; Python's flag-raising handler is reset to the
        default action (terminate) when the interpreter shuts down, so the task would die of the
        signal and Slurm would record the completed job as FAILED (seen in CI). An ignored signal
        stays ignored through the interpreter's exit."""
        signal.signal(self.signum, signal.SIG_IGN)

    def stop_requested(self, runtime):
        """A collective check for the training loop: True on every rank when any rank got a signal."""
        def check() -> bool:
            flag = torch.tensor([float(self.requested)], device=runtime.device)
            self.cause = int(runtime.all_reduce_max(flag).item())
            return self.cause > 0

        return check

    def requeue_cause(self) -> str:
        """"time_limit" or "preemption", decided as submitit decides it when it requeues (its handler's
        has_timed_out: the job ran past 80% of its time limit); the monitor shows requeues by cause."""
        handler = getattr(self.submitit_handler, "__self__", None)
        try:
            return "time_limit" if handler is not None and handler.has_timed_out() else "preemption"
        except Exception:  # a handler without the method (another submitit version): call it a preemption
            return "preemption"

    def finish_interrupted(self, runtime):
        """After the collective checkpoint: requeue through submitit on the first task, then leave on all
        ranks. Never returns: raises SystemExit (requeued) or JobNotRequeued / submitit's error."""
        outcome = {"requeued": False, "code": None, "reason": ""}
        error = None
        if runtime.is_main:
            try:
                if not callable(self.submitit_handler):
                    raise JobNotRequeued("no submitit signal handler was installed: nothing can requeue this job")
                self.submitit_handler(self.signum, None)  # checkpoint(), requeue, then sys.exit
                outcome["reason"] = "submitit's handler returned without requeueing"
            except SystemExit as e:
                outcome = {"requeued": True, "code": e.code, "reason": ""}
            except Exception as e:  # e.g. UncompletedJobError("Job not requeued because: ...")
                error, outcome["reason"] = e, f"{type(e).__name__}: {e}"
        outcome = runtime.all_gather_object(outcome)[0]
        runtime.shutdown()
        if outcome["requeued"]:
            print(f"checkpoint saved; job requeued (exit code {outcome['code']})", flush=True)
            raise SystemExit(outcome["code"])
        if error is not None:
            raise error
        raise JobNotRequeued(f"training stopped for a preemption/time limit and its state is saved, but the job "
                             f"was not requeued ({outcome['reason']}); continue with --resume RUN_DIR")
