"""One run's section of the monitor's HTML page: its details, job, health rules, usage, attempts, loss and
metric curves (inline SVG) and the newest sample grid (embedded as a data: URI, so the page needs no files
beside it and no server).
"""

import base64
import os

from textgan.monitor.curves import read_curves
from textgan.monitor.html_cells import duration_text, evidence_text, health_class, kimg_text, text
from textgan.monitor.latest_grid import latest_grid
from textgan.monitor.svg_chart import line_chart

# A grid bigger than this is linked by its path instead of embedded: base64 adds a third, and a page of many
# runs with such grids would be too heavy to open.
MAX_EMBEDDED_GRID_BYTES = 4 * 1024 * 1024


def _definitions(pairs) -> str:
    """A <dl> of (label, already-escaped value) pairs, leaving out the empty ones."""
    items = "".join(f"<dt>{text(label)}</dt><dd>{value}</dd>" for label, value in pairs if value not in ("", "-"))
    return f"<dl>{items}</dl>" if items else ""


def _mapping(values) -> str:
    """Every key of a dict the monitor's schema may extend (job, usage): unknown keys still show."""
    if not isinstance(values, dict):
        return ""
    return _definitions((key, text(value)) for key, value in values.items() if value is not None)


ATTEMPT_COLUMNS = ("attempt", "job_id", "hosts", "node_list", "started_utc", "ended_utc", "state", "exit_code",
                   "elapsed_sec", "outcome", "cause", "error", "kimg", "world_size", "nodes", "gpus", "cpus")


def _attempt_cell(key: str, value) -> str:
    return duration_text(value) if key.endswith("_sec") and value is not None else text(value)


def _attempts_table(attempts) -> str:
    """A table of the attempts: the columns of ATTEMPT_COLUMNS that any attempt fills, then any other key the
    schema may add (unix times left out: the utc columns say the same); *_sec as durations."""
    if not attempts:
        return ""
    present = {key for attempt in attempts for key, value in attempt.items() if value is not None}
    keys = [key for key in ATTEMPT_COLUMNS if key in present]
    keys += sorted(key for key in present - set(ATTEMPT_COLUMNS) if not key.endswith("_unix"))
    head = "".join(f"<th>{text(key)}</th>" for key in keys)
    body = "".join("<tr>" + "".join(f"<td>{_attempt_cell(key, attempt.get(key))}</td>" for key in keys) + "</tr>"
                   for attempt in attempts)
    return f'<h3>Attempts</h3><table class="attempts"><tr>{head}</tr>{body}</table>'


def _health(health) -> str:
    """Every rule that fired, most severe first (or the one rule when the row lists no others)."""
    if not isinstance(health, dict):
        return ""
    fired = health.get("all") or [health]
    items = "".join(f'<li><span class="state {health_class(rule.get("state"))}">{text(rule.get("state"))}</span> '
                    f'{text(rule.get("rule") or "")} <small>{evidence_text(rule.get("evidence"))}</small></li>'
                    for rule in fired if isinstance(rule, dict))
    return f"<h3>Health</h3><ul>{items}</ul>" if items else ""


def _charts(run_dir: str) -> str:
    curves = read_curves(run_dir)
    charts = [line_chart(name, points) for name, points in curves["stats"].items()]
    charts += [line_chart(name, points) for name, points in curves["metrics"].items()]
    if not charts:
        return '<p class="note">No ticks or evaluations logged yet.</p>'
    return '<div class="charts">' + "".join(charts) + "</div>"


def grid_figure(run_dir: str) -> str:
    """The newest fakes*.png as an <img> with a data: URI and its kimg in the caption; a note when there is none,
    when it is over MAX_EMBEDDED_GRID_BYTES or cannot be read. (The grid's own pixels carry each sample's
    caption: training draws them under the images and keeps no text copy.)"""
    found = latest_grid(run_dir)
    if found is None:
        return '<p class="note">No sample grid yet.</p>'
    path, kimg = found
    try:
        size = os.path.getsize(path)
        if size > MAX_EMBEDDED_GRID_BYTES:
            return (f'<p class="note">Latest samples (kimg {kimg_text(kimg)}) not embedded: {text(path)} is '
                    f"{size / 2**20:.1f} MiB, over the {MAX_EMBEDDED_GRID_BYTES // 2**20} MiB this page embeds.</p>")
        with open(path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
    except OSError as e:
        return f'<p class="note">Latest samples {text(path)} could not be read: {text(e.strerror or e)}</p>'
    caption = f"Latest samples at kimg {kimg_text(kimg)} ({os.path.basename(path)})"
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{text(caption)}">'
            f"<figcaption>{text(caption)}</figcaption></figure>")


def run_section(anchor: str, row: dict) -> str:
    """The <section id=anchor> for one monitor row (keys the row lacks are left out)."""
    run_dir = row.get("run_dir")
    beat = row.get("heartbeat")
    details = _definitions([
        ("run directory", text(run_dir)), ("tick", text(row.get("tick"))),
        ("last tick (UTC)", text(row.get("last_tick_utc"))),
        ("heartbeat", "" if not isinstance(beat, dict) else
         f"{duration_text(beat.get('age_sec'))} ago, {text(beat.get('phase'))}"),
        ("non-finite skips", text(row.get("nonfinite_skips"))), ("data skipped", text(row.get("data_skipped"))),
        ("requeues", text(row.get("requeues")))])
    job = row.get("job")
    usage = row.get("usage")
    parts = [f'<section id="{text(anchor)}"><h2>{text(row.get("desc"))}</h2>', details,
             _health(row.get("health")),
             f"<h3>Job</h3>{_mapping(job)}" if isinstance(job, dict) else "",
             f"<h3>Usage</h3>{_mapping(usage)}" if isinstance(usage, dict) else "",
             _attempts_table(row.get("attempts"))]
    if run_dir:
        parts += ["<h3>Curves</h3>", _charts(run_dir), "<h3>Samples</h3>", grid_figure(run_dir)]
    parts.append("</section>")
    return "".join(parts)
