"""`textgan monitor`: what every training run is doing, joined with its Slurm jobs.

    textgan monitor                              # every run under runs/
    textgan monitor runs/00003-coco64            # one run, in detail (attempts, log tail, checkpoints)
    textgan monitor runs sweeps --watch 10       # refresh in place every 10 s
    textgan monitor --json                       # for scripts (schema: textgan/monitor/run_state.py, rows.py)
    textgan monitor --html status.html --price-per-gpu-hour 2.5

PATH is a run directory or a directory holding run directories (one level down; a sweep's points too).
Slurm is asked once per refresh for all runs (squeue + sacct); runs launched with --local are read from
their files and this machine's processes. Runs whose job ended more than --hide-after hours ago are left
out unless --all. Nothing is written anywhere except the --html file.

The JSON is {"format": "textgan-monitor", "version": 1, "utc", "notes": [...], "hidden": N, "runs": [row]}.
"""

import argparse
import json
import math
import os
import sys
import time

from textgan.errors import UsageError

FORMAT = "textgan-monitor"
DEFAULT_ROOT = "runs"
HIDE_AFTER_H = 24.0


def find_runs(paths) -> list:
    """Run directories: each PATH that is one, else the run directories inside it (and inside its
    subdirectories, for sweeps); UsageError naming a PATH that is missing or holds none."""
    from textgan.monitor.run_state import is_run_dir

    found = []
    for path in paths:
        if not os.path.isdir(path):
            raise UsageError(f"{path}: no such directory; give a run directory or a directory of runs "
                             f"(default {DEFAULT_ROOT}/)")
        if is_run_dir(path):
            found.append(path)
            continue
        inside = []
        for name in sorted(os.listdir(path)):
            child = os.path.join(path, name)
            if is_run_dir(child):
                inside.append(child)
            elif os.path.isdir(child):
                inside += [os.path.join(child, n) for n in sorted(os.listdir(child))
                           if is_run_dir(os.path.join(child, n))]
        if not inside:
            raise UsageError(f"{path} holds no run directory (a run directory has config.yaml and stats.jsonl, "
                             "checkpoints/ or logs/, or a submitted job's submissions.jsonl)")
        found += inside
    return list(dict.fromkeys(os.path.abspath(p) for p in found))


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not math.isfinite(value):  # a nan or inf price, floor or interval would print nan costs or never wake
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def make_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="What each training run is doing: Slurm state, "
                                "progress, speed, ETA, attempts, GPU-hours and cost, metrics and health, read from "
                                "its run directory and Slurm (writes nothing but --html).")
    p.add_argument("paths", nargs="*", metavar="PATH", help=f"run directories or directories of runs (default "
                                                            f"{DEFAULT_ROOT}); one run directory shows it in detail")
    p.add_argument("--watch", nargs="?", const=10.0, type=positive, metavar="SECONDS",
                   help="refresh in place every SECONDS (default 10) until Ctrl-C")
    p.add_argument("--json", action="store_true", help=f"print {{'format': '{FORMAT}', 'version': N, 'runs': "
                                                        "[...]}} (keys: textgan/monitor/run_state.py, rows.py)")
    p.add_argument("--html", metavar="FILE", help="also write one self-contained page: the table, each run's loss "
                                                  "and metric curves, its latest sample grid")
    p.add_argument("--all", action="store_true", help="include runs whose job ended more than --hide-after hours ago")
    p.add_argument("--hide-after", type=positive, default=HIDE_AFTER_H, metavar="HOURS",
                   help=f"hide ended runs idle this long unless --all (default {HIDE_AFTER_H:g})")
    p.add_argument("--price-per-gpu-hour", type=positive, metavar="X", help="cost = GPU-hours x X")
    p.add_argument("--price-per-cpu-hour", type=positive, metavar="X", help="cost of CPU jobs = core-hours x X")
    p.add_argument("--stall-floor", type=positive, default=None, metavar="SECONDS",
                   help="the STALLED rule's floor (default 300): no heartbeat for max(floor, 3 x median tick)")
    p.add_argument("--no-slurm", action="store_true", help="do not ask squeue/sacct (states from the files only)")
    return p


def snapshot(args, runs: list) -> dict:
    from textgan.monitor.health import STALL_FLOOR_S
    from textgan.monitor.rows import is_old_and_done, monitor_rows
    from textgan.monitor.run_state import SCHEMA_VERSION

    now = time.time()
    rows, notes = monitor_rows(runs, now, slurm=not args.no_slurm,
                               stall_floor=STALL_FLOOR_S if args.stall_floor is None else args.stall_floor,
                               price_per_gpu_hour=args.price_per_gpu_hour, price_per_cpu_hour=args.price_per_cpu_hour)
    shown = rows if args.all or len(runs) == 1 else [r for r in rows if not is_old_and_done(r, now, args.hide_after)]
    name_rows(shown)
    return {"format": FORMAT, "version": SCHEMA_VERSION, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "notes": notes, "hidden": len(rows) - len(shown), "runs": shown}


def name_rows(rows: list) -> None:
    """row["name"]: the run dir's name, or its path below the runs' common folder where two runs share a name
    (the same recipe under two --outdir roots)."""
    names = [row["desc"] for row in rows]
    shared = {name for name in names if names.count(name) > 1}
    common = os.path.commonpath([row["run_dir"] for row in rows]) if len(rows) > 1 else ""
    for row in rows:
        row["name"] = os.path.relpath(row["run_dir"], common) if row["desc"] in shared else row["desc"]


def text_report(report: dict, detailed: bool) -> str:
    from textgan.monitor.detail import detail
    from textgan.monitor.table import findings, plain_table

    lines = [plain_table(report["runs"])]
    lines += findings(report["runs"])
    if report["hidden"]:
        lines.append(f"({report['hidden']} run(s) that ended more than a while ago are hidden: --all shows them)")
    lines += [f"note: {note}" for note in report["notes"]]
    if detailed and report["runs"]:
        lines.append(detail(report["runs"][0]))
    return "\n".join(lines)


def watch(args, runs: list, prog: str) -> int:
    """Refresh in place with rich's Live display until Ctrl-C."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from textgan.monitor.table import findings, rich_table

    def render():
        report = snapshot(args, runs)
        if args.html:
            write_page(args.html, report)
        extra = findings(report["runs"]) + [f"note: {n}" for n in report["notes"]]
        if report["hidden"]:
            extra.append(f"({report['hidden']} ended run(s) hidden: --all shows them)")
        title = f"{prog} - {report['utc']} - every {args.watch:g} s (Ctrl-C stops)"
        return Group(rich_table(report["runs"], title), Text("\n".join(extra)))

    try:
        with Live(render(), auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(args.watch)
                live.update(render(), refresh=True)
    except KeyboardInterrupt:
        return 0


def write_page(path: str, report: dict) -> None:
    from textgan.monitor.html_page import write_html

    write_html(path, report["runs"], report["utc"])


def main(argv=None, prog: str = "textgan monitor") -> int:
    try:
        args = make_parser(prog).parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        runs = find_runs(args.paths or [DEFAULT_ROOT])
        if args.html and os.path.isdir(args.html):
            raise UsageError(f"--html {args.html} is a directory; give a file name, e.g. {args.html}/monitor.html")
        if args.html and not os.path.isdir(os.path.dirname(os.path.abspath(args.html))):
            raise UsageError(f"--html {args.html}: its directory does not exist")
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    if args.watch:
        return watch(args, runs, prog)
    report = snapshot(args, runs)
    for note in report["notes"]:
        print(f"{prog}: note: {note}", file=sys.stderr)
    if args.html:
        write_page(args.html, report)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        detailed = len(args.paths) == 1 and len(runs) == 1 and os.path.abspath(args.paths[0]) == runs[0]
        print(text_report(dict(report, notes=[]), detailed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
