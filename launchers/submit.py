#!/usr/bin/env python
"""Submit a textgan training job: on Slurm through submitit, or on this machine with --local.

    python launchers/submit.py --local --config configs/demo.yaml
    python launchers/submit.py --local --config configs/demo.yaml --tasks-per-node 2   # 2 ranks, gloo
    python launchers/submit.py --config configs/coco256.yaml --set schedule.batch_size=64 --dry-run

Everything that can be checked is checked before a job exists (config, shards and their
manifest, text encoder); a bad request exits with code 2 and submits nothing.
This file only builds the request; training lives in textgan.train.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from textgan.config import check_world, load_config, to_yaml  # noqa: E402
from textgan.errors import UsageError  # noqa: E402


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML recipe, e.g. configs/demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set schedule.total_kimg=100")
    p.add_argument("--outdir", default="runs", help="where numbered run directories are created (default: runs)")
    p.add_argument("--local", action="store_true", help="run on this machine through submitit's local executor")
    p.add_argument("--nodes", type=int, default=1, help="nodes (Slurm)")
    p.add_argument("--tasks-per-node", type=int, default=1, help="ranks per node (one per GPU; CPU: processes)")
    p.add_argument("--timeout-min", type=int, default=60 * 24, help="job time limit in minutes")
    p.add_argument("--resume", default=None, metavar="auto|RUN_DIR",
                   help="continue a run from its newest complete checkpoint: 'auto' picks the newest run in "
                        "--outdir with the same description, or give the run directory")
    p.add_argument("--init-from", default=None, metavar="PATH",
                   help="start a new run from the G/D/G_ema weights of a checkpoint or exported file")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-wait", action="store_true", help="return right after submitting (local jobs too)")
    return p


def validate_request(args) -> None:
    if args.nodes < 1 or args.tasks_per_node < 1:
        raise UsageError(f"--nodes ({args.nodes}) and --tasks-per-node ({args.tasks_per_node}) must be >= 1")
    if args.local and args.nodes != 1:
        raise UsageError("--local runs on this machine: use --nodes 1 (and --tasks-per-node for several ranks)")
    if args.timeout_min < 1:
        raise UsageError(f"--timeout-min must be >= 1 (got {args.timeout_min})")


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    try:
        validate_request(args)
        cfg = load_config(args.config, args.overrides)
        world = args.nodes * args.tasks_per_node
        accumulation = check_world(cfg, world)
        if not cfg.desc:
            cfg.desc = os.path.splitext(os.path.basename(args.config))[0]
        if args.dry_run:
            print(to_yaml(cfg), end="")
            print(f"# world size {world} = {args.nodes} node(s) x {args.tasks_per_node} task(s); "
                  f"gradient accumulation {accumulation}")
            return 0
        from textgan.train.prepare import check_text_encoder, ensure_shards
        from textgan.train.resume import resolve_run_dir

        check_text_encoder(cfg)
        ensure_shards(cfg)
        run_dir, resume = resolve_run_dir(args.outdir, cfg.desc, args.resume)
    except UsageError as e:
        print(f"submit.py: error: {e}", file=sys.stderr)
        return e.exit_code
    return submit(args, cfg, run_dir, resume)


def submit(args, cfg, run_dir: str, resume) -> int:
    import submitit

    from textgan.train.trainer import Trainer

    executor = submitit.AutoExecutor(folder=os.path.join(run_dir, "logs"), cluster="local" if args.local else None)
    executor.update_parameters(timeout_min=args.timeout_min, nodes=args.nodes, tasks_per_node=args.tasks_per_node,
                               name=f"textgan-{cfg.desc}")
    job = executor.submit(Trainer(to_yaml(cfg), run_dir, resume=resume, init_from=args.init_from,
                                  argv=sys.argv))
    print(f"submitted job {job.job_id}\n  run dir: {run_dir}\n  log:     {job.paths.stdout}")
    if args.no_wait:
        return 0
    return wait_and_report(job)


def wait_and_report(job) -> int:
    """Follow rank 0's log on the console until the job ends, then print where things are."""
    shown = 0
    while not job.done():
        shown = _print_new(job.paths.stdout, shown)
        time.sleep(1.0)
    _print_new(job.paths.stdout, shown)
    try:
        # results(): one entry per task (rank); job.result() refuses jobs with several tasks.
        # Rank 0's summary is the one to report; results() raises if any rank failed.
        summary = job.results()[0]
    except Exception as e:  # the job's traceback is in its log; repeat the essence here
        print(f"\ntraining failed: {e}\n  full log: {job.paths.stderr}", file=sys.stderr)
        return 1
    print(_summary_text(summary))
    return 0


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
    for key in ("run_dir", "samples", "tensorboard", "checkpoints", "kimg", "shapes_alignment"):
        if key in summary:
            lines.append(f"  {key + ':':<18}{summary[key]}")
    if "tensorboard" in summary:
        lines.append(f"  view with:        tensorboard --logdir {summary['tensorboard']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
