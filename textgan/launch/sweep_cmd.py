"""`textgan sweep` (and `python launchers/sweep.py`): run a grid of training configs as ONE Slurm job array,
and collect the results table.

    textgan sweep --config configs/coco64.yaml --grid configs/sweeps/contrastive_weights.yaml \\
        --nodes 1 --gpus-per-node 4 --partition gpu --time 2-00:00:00 --max-parallel 8
    textgan sweep collect runs/00012-sweep-contrastive_weights      # refresh the table
    textgan sweep --config configs/demo.yaml --grid configs/sweeps/model_size.yaml --dry-run

The grid (see textgan/launch/sweep_grid.py) expands into points; every point passes the checks `textgan train`
runs (config values and ranges, world size, shards, text encoder; --dry-run included) before anything is
created, and a bad one exits with code 2.
The sweep directory `OUTDIR/{id:05d}-sweep-GRID/` holds sweep.json (what was submitted), logs/, one run
directory per point named after its overrides, and results.csv / results.md after `collect`.
Each array task is a normal training job: it checkpoints, requeues and resumes like `textgan train`'s.
With --local the points run one after another on this machine.
"""

import argparse
import json
import os
import sys

from textgan.config import load_config, to_yaml
from textgan.errors import UsageError
from textgan.launch.checks import check_config_resources, check_request
from textgan.launch.prepare import ensure_shards
from textgan.launch.results import SWEEP_FILE, collect
from textgan.launch.slurm import add_slurm_arguments, slurm_request
from textgan.launch.submission import command_of, print_submitted, submit_jobs, usage_error
from textgan.launch.sweep_grid import expand_grid, load_grid
from textgan.outdir_option import add_outdir_option
from textgan.scaling import scale_to_world

PROG = "textgan sweep"


def make_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # --config and --grid are required to submit, not to collect: checked in main
    p.add_argument("--config", help="base YAML recipe (required to submit)")
    p.add_argument("--grid", help="grid file, e.g. configs/sweeps/model_size.yaml (required to submit)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every point (repeatable); the grid's values win")
    add_outdir_option(p, "where the numbered sweep directory is created (default: runs)", default="runs")
    p.add_argument("--max-parallel", type=int, default=None, metavar="K",
                   help="at most K points run at once (sbatch --array=0-N%%K; default: all)")
    p.add_argument("--local", action="store_true", help="run the points one after another on this machine")
    p.add_argument("--dry-run", action="store_true", help="list the points and print the sbatch script; submit nothing")
    p.add_argument("--collect", metavar="SWEEP_DIR", help=argparse.SUPPRESS)  # the old spelling of `collect DIR`
    add_slurm_arguments(p)
    actions = p.add_subparsers(dest="action", metavar="collect SWEEP_DIR", required=False,
                               title="refresh a sweep's results table")
    c = actions.add_parser("collect", help="write SWEEP_DIR/results.csv, results.md and TensorBoard hparams",
                           description="refresh a sweep's results table")
    c.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a directory made by a sweep (it holds sweep.json)")
    c.add_argument("--no-tensorboard", action="store_true", help="skip writing TensorBoard hparams")
    return p


def main(argv=None, prog: str = PROG) -> int:
    parser = make_parser(prog)
    args = parser.parse_args(argv)
    if args.action == "collect" or args.collect is not None:
        sweep_dir = args.sweep_dir if args.action == "collect" else args.collect
        return collect_results(sweep_dir, not getattr(args, "no_tensorboard", False), f"{prog} collect")
    missing = [option for option, value in (("--config", args.config), ("--grid", args.grid)) if value is None]
    if missing:
        parser.error(f"the following arguments are required to submit a sweep: {', '.join(missing)} "
                     "(or `collect SWEEP_DIR` to refresh a results table)")
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
        return usage_error(prog, e)
    print(f"sweep {grid.name}: {len(resolved)} point(s) of {request.world_size} rank(s) each")
    for point, cfg in resolved:
        print(f"  {point.name}  (global batch {cfg.schedule.batch_size})")
    if args.dry_run:
        if not args.local:
            print("# sbatch script (one job array; NNNNN is numbered at submission):")
            print(script)
        return 0
    return submit(args, request, grid, resolved, prog)


def collect_results(sweep_dir: str, tensorboard: bool, prog: str) -> int:
    if not os.path.isfile(os.path.join(sweep_dir, SWEEP_FILE)):
        return usage_error(prog, UsageError(f"{sweep_dir} has no {SWEEP_FILE}: not a sweep directory"))
    print(collect(sweep_dir, tensorboard=tensorboard), end="")
    print(f"\nwritten: {os.path.join(sweep_dir, 'results.csv')}, {os.path.join(sweep_dir, 'results.md')}; "
          f"tensorboard --logdir {sweep_dir} (HParams tab)")
    return 0


def resolve_points(args, request):
    """Every point's validated config: [(point, cfg)], each through the checks `textgan train` runs (only
    reads, --dry-run included: textgan.launch.checks). Raises UsageError naming the point. This is each
    point's one config validation: its job merges the YAML validated here (Trainer.config)."""
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


def max_requeues(request, cfg) -> int:
    """--max-requeues when given, else the point's schedule.max_requeues."""
    return cfg.schedule.max_requeues if request.max_requeues is None else request.max_requeues


def submit(args, request, grid, resolved, prog: str = PROG) -> int:
    from textgan.atomic import write_text_atomic
    from textgan.train.heartbeat import record_submission
    from textgan.train.rundir import create_run_dir
    from textgan.train.trainer import Trainer

    sweep_dir = os.path.abspath(create_run_dir(args.outdir, f"sweep-{grid.name}"))
    logs = os.path.join(sweep_dir, "logs")
    trainers = []
    for point, cfg in resolved:
        run_dir = os.path.join(sweep_dir, point.name)
        os.makedirs(run_dir)
        trainers.append(Trainer(to_yaml(cfg), run_dir, argv=sys.argv + [f"# point {point.name}"],
                                max_requeues=max_requeues(request, cfg)))
    # submitit's own time-out bound is one number for the whole array: the largest of the points'
    request.max_requeues = max(max_requeues(request, cfg) for _, cfg in resolved)
    sweep = {"name": grid.name, "grid_file": os.path.abspath(args.grid), "grid": grid.grid, "fixed": grid.fixed,
             "config": os.path.abspath(args.config), "overrides": list(args.overrides), "local": args.local,
             "command": sys.argv, "points": [dict(point.to_dict(), total_kimg=float(cfg.schedule.total_kimg))
                                             for point, cfg in resolved]}
    if args.local:
        failed = submit_jobs(prog, "sweep", request, logs, local=True, fresh_dir=sweep_dir,
                             submit_all=lambda executor: run_locally(executor, trainers, sweep, sweep_dir, request))
        if failed is None:  # refused before a point ran
            return 1
        print(collect(sweep_dir, query_slurm=False), end="")
        print(f"sweep dir: {sweep_dir}")
        return 1 if failed else 0

    def submit_array(executor):
        with executor.batch():
            return [executor.submit(trainer) for trainer in trainers]

    jobs = submit_jobs(prog, "sweep", request, logs, local=False, submit_all=submit_array, fresh_dir=sweep_dir,
                       array_parallelism=args.max_parallel)
    if jobs is None:
        return 1
    for entry, job, trainer in zip(sweep["points"], jobs, trainers):
        entry["job_id"] = job.job_id
        record_submission(trainer.run_dir, job.job_id, "slurm", request, total_kimg=entry["total_kimg"])
    write_text_atomic(os.path.join(sweep_dir, SWEEP_FILE), json.dumps(sweep, indent=1) + "\n")
    array_id = jobs[0].job_id.split("_")[0]
    at_once = f", at most {args.max_parallel} at once" if args.max_parallel else ""
    print_submitted(f"submitted job array {array_id} ({len(jobs)} tasks{at_once})",
                    [("sweep dir", sweep_dir),
                     ("logs", f"{logs}/{array_id}_<point>_<rank>_log.out (point = array index = the run dir's number)")],
                    [f"textgan monitor {sweep_dir}     # every point: state, progress, cost, health",
                     f"squeue -j {array_id}",
                     f"sacct -j {array_id} -X --format=JobID,State,Elapsed,Restarts",
                     f"{command_of(prog)} collect {sweep_dir}     # results.csv / results.md, TensorBoard hparams",
                     f"tensorboard --logdir {sweep_dir}"])
    return 0


def run_locally(executor, trainers, sweep, sweep_dir, request) -> list:
    """One point after another (a machine runs one training job well, not several); the failed points' names."""
    from textgan.atomic import write_text_atomic
    from textgan.train.heartbeat import record_submission

    failed = []
    for entry, trainer in zip(sweep["points"], trainers):
        job = executor.submit(trainer)
        entry["job_id"] = job.job_id
        record_submission(trainer.run_dir, job.job_id, "local", request, total_kimg=entry["total_kimg"])
        write_text_atomic(os.path.join(sweep_dir, SWEEP_FILE), json.dumps(sweep, indent=1) + "\n")
        print(f"point {entry['name']}: local job {job.job_id}", flush=True)
        try:
            job.results()
        except Exception as e:
            failed.append(entry["name"])
            print(f"point {entry['name']} failed: {e}\n  log: {job.paths.stderr}", file=sys.stderr)
    return failed
