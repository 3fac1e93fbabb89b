#!/usr/bin/env python
"""Run a grid of training configs as ONE Slurm job array, and collect the results table.

    python launchers/sweep.py --config configs/coco64.yaml --grid configs/sweeps/contrastive_weights.yaml \\
        --nodes 1 --gpus-per-node 4 --partition gpu --time 2-00:00:00 --max-parallel 8
    python launchers/sweep.py collect runs/00012-sweep-contrastive_weights      # refresh the table
    python launchers/sweep.py --config configs/demo.yaml --grid configs/sweeps/model_size.yaml --dry-run

The grid (see textgan/launch/sweep_grid.py) expands into points; every point passes the checks submit.py
runs (config values and ranges, world size, shards, text encoder; --dry-run included) before anything is
created, and a bad one exits with code 2.
The sweep directory `OUTDIR/{id:05d}-sweep-GRID/` holds sweep.json (what was submitted), logs/, one run
directory per point named after its overrides, and results.csv / results.md after `collect`.
Each array task is a normal training job: it checkpoints, requeues and resumes like submit.py's.
With --local the points run one after another on this machine.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from textgan.config import load_config, to_yaml  # noqa: E402
from textgan.errors import UsageError  # noqa: E402
from textgan.launch.results import SWEEP_FILE, collect  # noqa: E402
from textgan.launch.checks import check_config_resources, check_request  # noqa: E402
from textgan.launch.slurm import add_slurm_arguments, slurm_request  # noqa: E402
from textgan.launch.sweep_grid import expand_grid, load_grid  # noqa: E402
from textgan.scaling import scale_to_world  # noqa: E402
from textgan.launch.prepare import ensure_shards  # noqa: E402


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="base YAML recipe")
    p.add_argument("--grid", required=True, help="grid file, e.g. configs/sweeps/model_size.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every point (repeatable); the grid's values win")
    p.add_argument("--outdir", default="runs", help="where the numbered sweep directory is created (default: runs)")
    p.add_argument("--max-parallel", type=int, default=None, metavar="K",
                   help="at most K points run at once (sbatch --array=0-N%%K; default: all)")
    p.add_argument("--local", action="store_true", help="run the points one after another on this machine")
    p.add_argument("--dry-run", action="store_true", help="list the points and print the sbatch script; submit nothing")
    add_slurm_arguments(p)
    return p


def collect_main(argv) -> int:
    p = argparse.ArgumentParser(prog="sweep.py collect", description="refresh a sweep's results table")
    p.add_argument("sweep_dir")
    p.add_argument("--no-tensorboard", action="store_true", help="skip writing TensorBoard hparams")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.sweep_dir, SWEEP_FILE)):
        print(f"sweep.py collect: error: {args.sweep_dir} has no {SWEEP_FILE}: not a sweep directory", file=sys.stderr)
        return 2
    print(collect(args.sweep_dir, tensorboard=not args.no_tensorboard), end="")
    print(f"\nwritten: {os.path.join(args.sweep_dir, 'results.csv')}, {os.path.join(args.sweep_dir, 'results.md')}; "
          f"tensorboard --logdir {args.sweep_dir} (HParams tab)")
    return 0


def resolve_points(args, request):
    """Every point's validated config: [(point, cfg)], each through the checks submit.py runs (only reads,
    --dry-run included: textgan.launch.checks). Raises UsageError naming the point."""
    grid = load_grid(args.grid)
    points = expand_grid(grid)
    resolved = []
    for point in points:
        try:
            cfg = load_config(args.config, list(args.overrides) + point.overrides)
            scale_to_world(cfg, request.world_size)  # each point's effective batch, EMA and lr
            check_config_resources(cfg)  # text encoder, shards (or the demo's planned ones), contrastive
        except UsageError as e:
            raise UsageError(f"sweep point {point.name} ({' '.join(point.overrides)}): {e}") from e
        cfg.desc = point.name
        resolved.append((point, cfg))
    return grid, resolved


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["collect"]:
        return collect_main(argv[1:])
    if "--collect" in argv:  # the option spelling of the same thing
        i = argv.index("--collect")
        return collect_main(argv[i + 1:i + 2])
    args = make_parser().parse_args(argv)
    try:
        if args.max_parallel is not None and args.max_parallel < 1:
            raise UsageError(f"--max-parallel must be >= 1 (got {args.max_parallel})")
        request = slurm_request(args, local=args.local)
        grid, resolved = resolve_points(args, request)
        request.job_name = request.job_name or f"textgan-sweep-{grid.name}"
        folder = os.path.join(os.path.abspath(args.outdir), f"NNNNN-sweep-{grid.name}", "logs")
        script = check_request(request, args.local, args.dry_run, folder, array_size=len(resolved),
                               array_parallelism=args.max_parallel)
        if not args.dry_run:  # every point passed: now build the demo's shards where they are missing
            for _, cfg in resolved:
                ensure_shards(cfg)
    except UsageError as e:
        print(f"sweep.py: error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"sweep {grid.name}: {len(resolved)} point(s) of {request.world_size} rank(s) each")
    for point, cfg in resolved:
        print(f"  {point.name}  (global batch {cfg.schedule.batch_size})")
    if args.dry_run:
        if not args.local:
            print("# sbatch script (one job array; NNNNN is numbered at submission):")
            print(script)
        return 0
    return submit(args, request, grid, resolved)


def _max_requeues(request, cfg) -> int:
    """--max-requeues when given, else the point's schedule.max_requeues."""
    return cfg.schedule.max_requeues if request.max_requeues is None else request.max_requeues


def submit(args, request, grid, resolved) -> int:
    from textgan.atomic import write_text_atomic
    from textgan.launch.slurm import make_executor
    from textgan.train.rundir import create_run_dir
    from textgan.train.trainer import Trainer

    sweep_dir = os.path.abspath(create_run_dir(args.outdir, f"sweep-{grid.name}"))
    logs = os.path.join(sweep_dir, "logs")
    trainers = []
    for point, cfg in resolved:
        run_dir = os.path.join(sweep_dir, point.name)
        os.makedirs(run_dir)
        trainers.append(Trainer(to_yaml(cfg), run_dir, argv=sys.argv + [f"# point {point.name}"],
                                max_requeues=_max_requeues(request, cfg)))
    # submitit's own time-out bound is one number for the whole array: the largest of the points'
    request.max_requeues = max(_max_requeues(request, cfg) for _, cfg in resolved)
    sweep = {"name": grid.name, "grid_file": os.path.abspath(args.grid), "grid": grid.grid, "fixed": grid.fixed,
             "config": os.path.abspath(args.config), "overrides": list(args.overrides), "local": args.local,
             "command": sys.argv, "points": [dict(point.to_dict(), total_kimg=float(cfg.schedule.total_kimg))
                                             for point, cfg in resolved]}
    executor = make_executor(request, logs, local=args.local, array_parallelism=args.max_parallel)
    if args.local:
        return run_locally(executor, trainers, sweep, sweep_dir)
    try:
        with executor.batch():
            jobs = [executor.submit(trainer) for trainer in trainers]
    except Exception as e:  # sbatch refused: nothing runs, so leave nothing behind
        import shutil

        shutil.rmtree(sweep_dir, ignore_errors=True)
        print(f"sweep.py: error: the sweep was not submitted: {e}", file=sys.stderr)
        return 1
    for entry, job in zip(sweep["points"], jobs):
        entry["job_id"] = job.job_id
    write_text_atomic(os.path.join(sweep_dir, SWEEP_FILE), json.dumps(sweep, indent=1) + "\n")
    array_id = jobs[0].job_id.split("_")[0]
    print(f"submitted job array {array_id} ({len(jobs)} tasks"
          f"{f', at most {args.max_parallel} at once' if args.max_parallel else ''})\n"
          f"  sweep dir:  {sweep_dir}\n"
          f"  logs:       {logs}/{array_id}_<point>_<rank>_log.out (point = array index = the run dir's number)\n"
          f"follow it:\n  squeue -j {array_id}\n  sacct -j {array_id} -X --format=JobID,State,Elapsed,Restarts\n"
          f"  python launchers/sweep.py collect {sweep_dir}     # results.csv / results.md, TensorBoard hparams\n"
          f"  tensorboard --logdir {sweep_dir}")
    return 0


def run_locally(executor, trainers, sweep, sweep_dir) -> int:
    """One point after another (a machine runs one training job well, not several)."""
    from textgan.atomic import write_text_atomic

    failed = []
    for entry, trainer in zip(sweep["points"], trainers):
        job = executor.submit(trainer)
        entry["job_id"] = job.job_id
        write_text_atomic(os.path.join(sweep_dir, SWEEP_FILE), json.dumps(sweep, indent=1) + "\n")
        print(f"point {entry['name']}: local job {job.job_id}", flush=True)
        try:
            job.results()
        except Exception as e:
            failed.append(entry["name"])
            print(f"point {entry['name']} failed: {e}\n  log: {job.paths.stderr}", file=sys.stderr)
    print(collect(sweep_dir, query_slurm=False), end="")
    print(f"sweep dir: {sweep_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
