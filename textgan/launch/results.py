"""The results table of a sweep: one row per point, refreshed from the run directories at any time.

    rows = collect(sweep_dir)     # also writes results.csv, results.md and TensorBoard hparams

Per point: its swept values, status (Slurm state when sacct is available), requeues, kimg and tick
reached (the last stats.jsonl line) with that line's Loss/* means, and for every metric-NAME.jsonl
(lines {"tick", "kimg", "results": {key: value}}) each numeric result's latest value, best value and the
kimg of the best. Best is the minimum for distances (fid*, kid*, *loss*, lpips*), the maximum otherwise.
"""

import csv
import glob
import io
import json
import os
import subprocess
from typing import Dict, List, Optional

from textgan.files import read_jsonl
from textgan.metrics.history import lower_is_better, metric_summary  # noqa: F401  (part of this module's API)

SWEEP_FILE = "sweep.json"
CSV_FILE = "results.csv"
MARKDOWN_FILE = "results.md"
HPARAMS_SUFFIX = ".sweep-hparams"  # our TensorBoard event files in each point's run dir (replaced on collect)


def point_row(run_dir: str) -> dict:
    """Everything the table shows about one run directory (values only; no formatting)."""
    row: dict = {"kimg": None, "tick": None, "requeues": 0, "losses": {}, "metrics": {}}
    stats = read_jsonl(os.path.join(run_dir, "stats.jsonl"), tolerant=True)
    if stats:
        last = stats[-1]
        row["kimg"] = last.get("Progress/kimg", {}).get("mean")
        row["tick"] = int(last.get("Progress/tick", {}).get("mean") or 0)
        row["losses"] = {k: v.get("mean") for k, v in last.items() if k.startswith("Loss/") and isinstance(v, dict)}
    row["requeues"] = len(read_jsonl(os.path.join(run_dir, "requeues.jsonl"), tolerant=True))
    for path in sorted(glob.glob(os.path.join(run_dir, "metric-*.jsonl"))):
        row["metrics"].update(metric_summary(path))
    return row


def slurm_states(job_ids: List[str]) -> Dict[str, str]:
    """{job id: state} from sacct (empty when sacct is missing or fails): PENDING, RUNNING, COMPLETED..."""
    ids = [j for j in job_ids if j]
    if not ids:
        return {}
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(sorted(
            {j.split("_")[0] for j in ids}))], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.splitlines():
        job, _, state = line.partition("|")
        states[job.strip()] = state.split()[0] if state.strip() else ""
    return states


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(sweep: dict, sweep_dir: str, states: Optional[Dict[str, str]] = None) -> tuple:
    """(columns, rows of strings) for the sweep described by sweep.json."""
    states = states or {}
    keys = list(sweep["grid"])
    raw = []
    for point in sweep["points"]:
        run_dir = os.path.join(sweep_dir, point["name"])
        row = point_row(run_dir)
        total = point.get("total_kimg")
        if point.get("job_id") in states:
            status = states[point["job_id"]]
        elif row["kimg"] is not None and total is not None and row["kimg"] >= total:
            status = "finished"
        else:
            status = "started" if row["kimg"] is not None else "not started"
        raw.append((point, row, status))
    metric_cols = sorted({c for _, row, _ in raw for c in row["metrics"]})
    loss_cols = sorted({c for _, row, _ in raw for c in row["losses"]})
    columns = (["point"] + keys + ["status", "requeues", "kimg", "tick"]
               + [f"{m} {part}" for m in metric_cols for part in ("latest", "best", "best@kimg")] + loss_cols)
    rows = []
    for point, row, status in raw:
        cells = [point["name"]] + [_fmt(point["values"][k]) for k in keys]
        cells += [status, _fmt(row["requeues"]), _fmt(row["kimg"]), _fmt(row["tick"])]
        for m in metric_cols:
            found = row["metrics"].get(m, {})
            cells += [_fmt(found.get("latest")), _fmt(found.get("best")), _fmt(found.get("best_kimg"))]
        cells += [_fmt(row["losses"].get(c)) for c in loss_cols]
        rows.append(cells)
    return columns, rows, raw


def to_markdown(columns: list, rows: list, title: str, best_lines: List[str]) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    if best_lines:
        lines += [""] + best_lines
    return "\n".join(lines) + "\n"


def best_points(raw) -> List[str]:
    """One line per metric column: which point has the best 'best' value."""
    columns = sorted({c for _, row, _ in raw for c in row["metrics"]})
    out = []
    for column in columns:
        scored = [(row["metrics"][column]["best"], point["name"]) for point, row, _ in raw if column in row["metrics"]]
        value, name = (min if lower_is_better(column) else max)(scored)
        out.append(f"- best {column}: {name} ({value:.4g})")
    return out


def write_hparams(sweep: dict, sweep_dir: str, raw) -> None:
    """TensorBoard HParams: per point, its swept values and its results, in an event file of its own run
    directory (so the HParams view links to the run's curves). Replaced on every collect."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    from textgan.train.stats import hparam_value

    for point, row, _ in raw:
        run_dir = os.path.join(sweep_dir, point["name"])
        if not os.path.isdir(run_dir):
            continue
        for old in glob.glob(os.path.join(run_dir, f"events.out.tfevents.*{HPARAMS_SUFFIX}")):
            os.remove(old)
        metrics = {"Sweep/kimg": float(row["kimg"] or 0.0)}
        for column, found in row["metrics"].items():
            metrics[f"Sweep/{column}/latest"] = found["latest"]
            metrics[f"Sweep/{column}/best"] = found["best"]
        step = int(round(metrics["Sweep/kimg"] * 1000))
        writer = SummaryWriter(log_dir=run_dir, filename_suffix=HPARAMS_SUFFIX)
        try:
            values = {k: hparam_value(v) for k, v in point["values"].items()}
            for summary in hparams(values, metrics):
                writer.file_writer.add_summary(summary, step)
            for name, value in metrics.items():
                writer.add_scalar(name, value, global_step=step)
        finally:
            writer.close()


def collect(sweep_dir: str, tensorboard: bool = True, query_slurm: bool = True) -> str:
    """Refresh results.csv and results.md (and the TensorBoard hparams) of a sweep; returns the markdown."""
    from textgan.atomic import write_text_atomic

    path = os.path.join(sweep_dir, SWEEP_FILE)
    with open(path) as f:
        sweep = json.load(f)
    states = slurm_states([p.get("job_id") for p in sweep["points"]]) if query_slurm and not sweep.get("local") else {}
    columns, rows, raw = table(sweep, sweep_dir, states)
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(columns)
    out.writerows(rows)
    write_text_atomic(os.path.join(sweep_dir, CSV_FILE), buf.getvalue())
    markdown = to_markdown(columns, rows, f"Sweep {sweep['name']} ({len(rows)} points)", best_points(raw))
    write_text_atomic(os.path.join(sweep_dir, MARKDOWN_FILE), markdown)
    if tensorboard:
        write_hparams(sweep, sweep_dir, raw)
    return markdown
