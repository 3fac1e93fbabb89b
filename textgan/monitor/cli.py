"""`textgan monitor [PATH ...] [--json]`: one row per run, read from the run directories.

    textgan monitor                      # every run under runs/
    textgan monitor runs/00003-coco64    # one run
    textgan monitor runs sweeps --json   # runs under several roots, as JSON (schema below)

PATH is a run directory or a directory holding run directories (one level down; a sweep's points too). The
JSON is {"format": "textgan-monitor", "version": 1, "utc", "runs": [row, ...]} with the rows of
textgan.monitor.run_state. Nothing is written anywhere. This first version reads the run directories only;
joining Slurm's job states, the health rules, --watch and --html come with the rest of the monitor.
"""

import argparse
import json
import os
import sys
import time

from textgan.errors import UsageError

FORMAT = "textgan-monitor"
DEFAULT_ROOT = "runs"
BAR = 20


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
                             "checkpoints/ or logs/)")
        found += inside
    return list(dict.fromkeys(os.path.abspath(p) for p in found))


def duration(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_cell(row) -> str:
    if row["kimg"] is None:
        return "not started"
    if not row["progress"] and row["progress"] != 0:
        return f"{row['kimg']:g} kimg"
    filled = int(round(row["progress"] * BAR))
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {row['kimg']:g}/{row['total_kimg']:g}"


def headline_metric(metrics: dict) -> str:
    """The first metric column without a '/' (a metric's headline number): best (at kimg) and latest."""
    for column, m in metrics.items():
        if "/" not in column:
            return f"{column} {m['latest']:.4g} (best {m['best']:.4g} @ {m['best_kimg']:g})"
    return "-"


def table(rows) -> str:
    header = ("run", "progress", "sec/kimg", "ETA", "elapsed", "attempts", "heartbeat", "metric")
    lines = [header]
    for row in rows:
        beat = row["heartbeat"]
        beat_cell = "-" if beat is None else f"{duration(beat['age_sec'])} ago ({beat['phase']})"
        outcomes = [a["outcome"] or "running" for a in row["attempts"]]
        attempts = f"{len(outcomes)}: {outcomes[-1]}" if outcomes else "-"
        speed = "-" if row["sec_per_kimg"] is None else f"{row['sec_per_kimg']:.3g}"
        lines.append((row["desc"], progress_cell(row), speed, duration(row["eta_sec"]), duration(row["elapsed_sec"]),
                      attempts, beat_cell, headline_metric(row["metrics"])))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def make_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="What each training run is doing: progress, speed, ETA, "
                                "attempts, heartbeat and metrics, read from its run directory (writes nothing).")
    p.add_argument("paths", nargs="*", metavar="PATH", help=f"run directories or directories of runs (default "
                                                            f"{DEFAULT_ROOT})")
    p.add_argument("--json", action="store_true", help=f"print {{'format': '{FORMAT}', 'version': N, 'runs': "
                                                        "[...]}} (see textgan/monitor/run_state.py)")
    return p


def main(argv=None, prog: str = "textgan monitor") -> int:
    try:
        args = make_parser(prog).parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    from textgan.monitor.run_state import SCHEMA_VERSION, read_run

    try:
        runs = find_runs(args.paths or [DEFAULT_ROOT])
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    now = time.time()
    rows = [read_run(run, now=now) for run in runs]
    if args.json:
        print(json.dumps({"format": FORMAT, "version": SCHEMA_VERSION,
                          "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "runs": rows}, indent=1))
    else:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
