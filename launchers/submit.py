#!/usr/bin/env python
"""Submit a textgan training job: on Slurm through submitit, or on this machine with --local.

    python launchers/submit.py --local --config configs/demo.yaml
    python launchers/submit.py --local --config configs/demo.yaml --tasks-per-node 2   # 2 ranks, gloo
    python launchers/submit.py --config configs/coco256.yaml --nodes 4 --gpus-per-node 8 \\
        --partition gpu --time 2-00:00:00 --account myproj --dry-run                # show the sbatch script

Everything that can be checked is checked before a job exists, --dry-run included (config values and
their ranges, shards and their manifest, text encoder, --init-from, --resume, the Slurm request and its
batch script, GPUs for --local); a bad request exits with code 2 and creates nothing.
A Slurm submission prints the job id, run directory, logs and how to follow the job, then returns
(--wait follows it); a --local job is a child of this command, so it waits unless --no-wait.
This file only builds the request; training lives in textgan.train, sbatch options in textgan.launch.slurm.
"""

import argparse
import contextlib
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from textgan.config import load_config, to_yaml  # noqa: E402
from textgan.errors import UsageError  # noqa: E402
from textgan.launch.interrupt import (EXIT_INTERRUPTED, CtrlC, controller_ignoring_ctrl_c,  # noqa: E402
                                      kill_process_tree, resume_command)
from textgan.launch.checks import check_config_resources, check_request  # noqa: E402
from textgan.launch.slurm import add_slurm_arguments, log_paths, slurm_request  # noqa: E402
from textgan.scaling import scale_to_world  # noqa: E402
from textgan.launch.prepare import check_init_from, ensure_shards  # noqa: E402
from textgan.launch.resume import choose_run_dir, resolve_run_dir  # noqa: E402
from textgan.train.rundir import sanitize_desc  # noqa: E402


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML recipe, e.g. configs/demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set schedule.total_kimg=100")
    p.add_argument("--outdir", default="runs", help="where numbered run directories are created (default: runs)")
    p.add_argument("--local", action="store_true", help="run on this machine through submitit's local executor")
    p.add_argument("--resume", default=None, metavar="auto|RUN_DIR",
                   help="continue a run from its newest complete checkpoint: 'auto' picks the newest run in "
                        "--outdir with the same description, or give the run directory")
    p.add_argument("--init-from", default=None, metavar="PATH",
                   help="start a new run from the G/D/G_ema weights of a checkpoint or exported file")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the sbatch script; "
                   "submit nothing")
    p.add_argument("--wait", action="store_true", help="Slurm: follow the job's log until it ends")
    p.add_argument("--no-wait", action="store_true", help="--local: return right after starting the job")
    add_slurm_arguments(p)
    return p


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    try:
        # Every check first, --dry-run included; each only reads (textgan.launch.checks).
        request = slurm_request(args, local=args.local)
        cfg = load_config(args.config, args.overrides)
        if request.max_requeues is None:  # the option wins over the config's bound
            request.max_requeues = cfg.schedule.max_requeues
        scaled = scale_to_world(cfg, request.world_size)  # the job and its config.yaml get the effective batch
        if not cfg.desc:  # the config file's name, made safe for a directory and a job name
            cfg.desc = sanitize_desc(os.path.splitext(os.path.basename(args.config))[0])
        request.job_name = request.job_name or f"textgan-{cfg.desc}"
        check_init_from(args.init_from)
        manifest = check_config_resources(cfg)
        choice = choose_run_dir(args.outdir, cfg.desc, args.resume)
        run_dir_shown = choice.run_dir or os.path.join(os.path.abspath(args.outdir), f"NNNNN-{cfg.desc}")
        script = check_request(request, args.local, args.dry_run, os.path.join(run_dir_shown, "logs"))
        if args.dry_run:
            print_dry_run(args, cfg, request, scaled, manifest, choice, script)
            return 0
        # Only now anything is written: the demo's shards (when missing), then the run directory.
        ensure_shards(cfg)
        run_dir, resume = resolve_run_dir(args.outdir, cfg.desc, args.resume)
    except UsageError as e:
        print(f"submit.py: error: {e}", file=sys.stderr)
        return e.exit_code
    return submit(args, cfg, request, os.path.abspath(run_dir), resume)


def print_dry_run(args, cfg, request, scaled, manifest: dict, choice, script) -> None:
    print(to_yaml(cfg), end="")
    print(f"# world size {request.world_size} = {request.nodes} node(s) x {request.tasks_per_node} task(s); "
          f"gradient accumulation {scaled.accumulation}")
    print(f"# {scaled.describe(cfg.schedule.batch_scaling, cfg.optim.lr_scaling)}")
    if manifest.get("planned"):
        print(f"# data: {cfg.data.shards} has no shards yet; the submission builds {manifest['samples']} "
              f"captioned-shapes samples there first (data.build_shapes_if_missing)")
    else:
        print(f"# data: {cfg.data.shards}: {manifest['samples']} samples at {cfg.data.resolution} px")
    for note in choice.notes:
        print(f"# {note}")
    if choice.run_dir is None:
        print(f"# run dir: a new one, {os.path.join(os.path.abspath(args.outdir), f'NNNNN-{cfg.desc}')}")
    elif not choice.reuse:
        print(f"# run dir: {choice.run_dir}, resuming from "
              f"{'its newest complete checkpoint' if choice.resume == 'auto' else choice.resume}")
    if args.init_from:
        print(f"# initial G/D/G_ema weights: {args.init_from}")
    if args.local:
        print(f"# --local: submitit's local executor, {request.tasks_per_node} process(es), time limit "
              f"{request.time_min} min; no sbatch script")
        return
    print(f"# sbatch script (the run directory NNNNN is numbered at submission):\n{script}")


def submit(args, cfg, request, run_dir: str, resume) -> int:
    from textgan.launch.slurm import make_executor
    from textgan.train.trainer import Trainer

    fresh = resume is None
    logs = os.path.join(run_dir, "logs")
    trainer = Trainer(to_yaml(cfg), run_dir, resume=resume, init_from=args.init_from, argv=sys.argv,
                      max_requeues=request.max_requeues)
    try:
        executor = make_executor(request, logs, local=args.local)
        with controller_ignoring_ctrl_c() if args.local else contextlib.nullcontext():
            job = executor.submit(trainer)
    except Exception as e:  # sbatch refused (unknown partition, no such GRES, ...): say so, leave no empty run
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
        print(f"submit.py: error: the job was not submitted: {e}", file=sys.stderr)
        return 1
    print_submitted(job, run_dir, request, local=args.local)
    if args.local:
        return 0 if args.no_wait else wait_and_report(job, run_dir, local=True)
    return wait_and_report(job, run_dir) if args.wait else 0


def print_submitted(job, run_dir: str, request, local: bool) -> None:
    paths = log_paths(os.path.join(run_dir, "logs"), job.job_id, request.world_size)
    lines = [f"submitted job {job.job_id}", f"  run dir:     {run_dir}",
             f"  log:         {paths[0][0]}", f"  errors:      {paths[0][1]}"]
    if len(paths) > 1:
        lines.append(f"  other ranks: {os.path.join(run_dir, 'logs', f'{job.job_id}_<rank>_log.out')} (.err)")
    lines.append("  (a requeued attempt appends to the same logs; each starts with a '==== textgan attempt' line)")
    if not local:
        lines += ["follow it:",
                  f"  squeue -j {job.job_id}",
                  f"  sacct -j {job.job_id} --format=JobID,JobName,State,Elapsed,NodeList,Restarts",
                  f"  tail -f {paths[0][0]}",
                  f"  tensorboard --logdir {run_dir}",
                  f"  scancel {job.job_id}     # stop it (resume later with --resume {run_dir})"]
    print("\n".join(lines), flush=True)


def wait_and_report(job, run_dir: str, local: bool = False) -> int:
    """Follow rank 0's log on the console until the job ends, then print where things are.
    --local: Ctrl-C saves and stops the job (a second one stops it at once; textgan.launch.interrupt);
    Slurm: Ctrl-C only stops following, the job runs on."""
    # submitit's LocalJob keeps the Popen of its controller (the parent of the ranks) as _process
    ctrl_c = CtrlC(kill_job=lambda: kill_process_tree(job._process.pid)) if local else None
    shown = 0
    try:
        while not job.done():
            shown = _print_new(job.paths.stdout, shown)
            time.sleep(1.0)
    except KeyboardInterrupt:  # Slurm only: local jobs are followed under CtrlC
        print(f"\nstopped following job {job.job_id}; it keeps running (scancel {job.job_id} stops it)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if ctrl_c is not None:
            ctrl_c.restore()
    _print_new(job.paths.stdout, shown)
    try:
        # results(): one entry per task (rank); job.result() refuses jobs with several tasks.
        # Rank 0's summary is the one to report; results() raises if any rank failed.
        summary = job.results()[0]
    except Exception:
        if ctrl_c is not None and ctrl_c.presses >= 2:  # killed on request, not a failure of the run
            return _report_interrupted(None, run_dir)
        print(f"\ntraining failed:\n{_failures(job)}\n  full log: {job.paths.stderr}", file=sys.stderr)
        return 1
    if summary.get("interrupted"):
        return _report_interrupted(summary["stop_checkpoint"], run_dir)
    print(_summary_text(summary))
    return 0


def _report_interrupted(saved, run_dir: str) -> int:
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


def _failures(job) -> str:
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


def _print_new(path, offset: int) -> int:
    try:
        with open(path) as f:
            f.seek(offset)
            text = f.read()
    except FileNotFoundError:
        return offset
    sys.stdout.write(text)
    sys.stdout.flush()
    return offset + len(text.encode())


def _summary_text(summary: dict) -> str:
    lines = ["", "training finished"]
    for key in ("run_dir", "samples", "tensorboard", "checkpoints", "best_checkpoint", "best_metric", "kimg",
                "shapes_alignment"):
        if key in summary:
            lines.append(f"  {key + ':':<18}{summary[key]}")
    if "tensorboard" in summary:
        lines.append(f"  view with:        tensorboard --logdir {summary['tensorboard']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
