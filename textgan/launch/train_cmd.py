"""`textgan train` (and `python launchers/submit.py`): submit a training job, on Slurm through submitit or
on this machine with --local.

    textgan train --local --config configs/demo.yaml
    textgan train --local --config configs/demo.yaml --tasks-per-node 2   # 2 ranks, gloo
    textgan train --config configs/coco256.yaml --nodes 4 --gpus-per-node 8 \\
        --partition gpu --time 2-00:00:00 --account myproj --dry-run      # show the sbatch script

Everything that can be checked is checked before a job exists, --dry-run included (config values and
their ranges, shards and their manifest, text encoder, --init-from, --resume, the Slurm request and its
batch script, GPUs for --local); a bad request exits with code 2 and creates nothing.
A Slurm submission prints the job id, run directory, logs and how to follow the job, then returns
(--wait follows it); a --local job is a child of this command, so it waits unless --no-wait.
"""

import argparse
import os
import sys

from textgan.config import load_config, to_yaml
from textgan.errors import UsageError
from textgan.launch.checks import check_config_resources, check_request
from textgan.launch.prepare import check_init_from, ensure_shards
from textgan.launch.resume import choose_run_dir, resolve_run_dir
from textgan.launch.slurm import add_slurm_arguments, log_paths, slurm_request
from textgan.launch.submission import print_submitted, submit_jobs, usage_error
from textgan.outdir_option import add_outdir_option
from textgan.scaling import scale_to_world
from textgan.train.rundir import sanitize_desc

PROG = "textgan train"
# What --resume takes (textgan.launch.resume.choose_run_dir); the README's Training section says the same.
RESUME_HELP = ("continue a run exactly: 'auto' picks the newest run in --outdir with this config's description "
               "that has a complete checkpoint (else restarts in an abandoned one, else starts a new run); "
               "RUN_DIR continues that run from its newest complete checkpoint; CHECKPOINT "
               "(RUN_DIR/checkpoints/<tag>) continues that run from that very checkpoint")


def make_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML recipe, e.g. configs/demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set schedule.total_kimg=100")
    add_outdir_option(p, "where numbered run directories are created (default: runs)", default="runs")
    p.add_argument("--local", action="store_true", help="run on this machine through submitit's local executor")
    p.add_argument("--resume", default=None, metavar="auto|RUN_DIR|CHECKPOINT", help=RESUME_HELP)
    p.add_argument("--init-from", default=None, metavar="PATH",
                   help="start a new run from the G/D/G_ema weights of a checkpoint or exported file")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the sbatch script; "
                   "submit nothing")
    p.add_argument("--wait", action="store_true", help="Slurm: follow the job's log until it ends")
    p.add_argument("--no-wait", action="store_true", help="--local: return right after starting the job")
    add_slurm_arguments(p)
    return p


def main(argv=None, prog: str = PROG) -> int:
    args = make_parser(prog).parse_args(argv)
    try:
        # Every check first, --dry-run included; each only reads (textgan.launch.checks).
        # This is the run's one config validation: the job merges the YAML validated here (Trainer.config).
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
        return usage_error(prog, e)
    return submit(args, cfg, request, os.path.abspath(run_dir), resume, prog)


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


def submit(args, cfg, request, run_dir: str, resume, prog: str = PROG) -> int:
    from textgan.launch.follow import wait_and_report
    from textgan.train.heartbeat import record_submission
    from textgan.train.trainer import Trainer

    trainer = Trainer(to_yaml(cfg), run_dir, resume=resume, init_from=args.init_from, argv=sys.argv,
                      max_requeues=request.max_requeues)
    jobs = submit_jobs(prog, "job", request, os.path.join(run_dir, "logs"), args.local,
                       lambda executor: [executor.submit(trainer)],
                       fresh_dir=run_dir if resume is None else None, ignore_ctrl_c=args.local)
    if jobs is None:
        return 1
    job = jobs[0]
    record_submission(run_dir, job.job_id, "local" if args.local else "slurm", request,
                      total_kimg=cfg.schedule.total_kimg)
    print_run_submitted(job, run_dir, request, local=args.local)
    if args.local:
        return 0 if args.no_wait else wait_and_report(job, run_dir, local=True)
    return wait_and_report(job, run_dir) if args.wait else 0


def print_run_submitted(job, run_dir: str, request, local: bool) -> None:
    paths = log_paths(os.path.join(run_dir, "logs"), job.job_id, request.world_size)
    facts = [("run dir", run_dir), ("log", paths[0][0]), ("errors", paths[0][1])]
    if len(paths) > 1:
        facts.append(("other ranks", f"{os.path.join(run_dir, 'logs', f'{job.job_id}_<rank>_log.out')} (.err)"))
    facts.append(("", "(a requeued attempt appends to the same logs; each starts with a '==== textgan attempt' line)"))
    follow = [] if local else [
        f"textgan monitor {run_dir}     # state, progress, attempts, cost, health",
        f"squeue -j {job.job_id}",
        f"sacct -j {job.job_id} -D --format=JobID,JobName,State,Elapsed,NodeList",
        f"tail -f {paths[0][0]}",
        f"tensorboard --logdir {run_dir}",
        f"scancel {job.job_id}     # stop it (resume later with --resume {run_dir})"]
    print_submitted(f"submitted job {job.job_id}", facts, follow)
