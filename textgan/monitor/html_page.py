"""`textgan monitor --html FILE`: the monitor's rows as one self-contained HTML page.

    write_html("monitor.html", rows, "2026-01-02T03:04:05Z")

The page holds a table (one line per run: job, state, health, progress, speed, ETA, elapsed, attempts, usage,
cost, headline metric) and per run a section with its details, loss and metric curves (inline SVG) and the
newest sample grid (a data: URI). Everything is inside the one file: it opens from disk in any browser, can be
copied off the cluster or mailed, and needs no server. Its Content-Security-Policy lets it load nothing from
anywhere (only its inline style and script, and data: images), so a page a run's files fed cannot call out.
"""

from textgan.atomic import write_text_atomic
from textgan.monitor.html_cells import (attempts_cell, duration_text, evidence_text, headline_metric_cell, health_class,
                                        kimg_text, text, usage_hours_cell)
from textgan.monitor.html_run_section import run_section

CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                           "img-src data:; base-uri 'none'; form-action 'none'")
TABLE_HEADER = ("run", "job", "state", "health", "progress", "kimg", "sec/kimg", "ETA", "elapsed", "attempts",
                "GPU/CPU hours", "cost", "metric")

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
td small, li small { color: #555; }
.red { background: #f4b6b6; } .amber { background: #fbe0a6; } .green { background: #c8ecc4; }
section { border-top: 2px solid #999; margin-top: 2em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0 1em; }
dd { margin: 0; }
.charts { display: flex; flex-wrap: wrap; gap: 8px; }
.chart { border: 1px solid #ddd; background: #fff; }
.chart text { font-size: 11px; fill: #333; }
.chart .axis { stroke: #888; fill: none; }
.chart polyline { stroke: #1f5fbf; stroke-width: 1.5; fill: none; }
.chart circle { fill: #1f5fbf; }
.note { color: #555; font-style: italic; }
#status { color: #b00; font-weight: bold; }
figure img { max-width: 100%; image-rendering: pixelated; }
"""

# After load, the page records in its own DOM how many of its images decoded (complete with a width) and how
# many did not, and how many charts were drawn with a size; a headless browser's DOM dump then proves the page
# rendered (tests/test_monitor_html.py), and a reader sees a line when an embedded grid is broken.
SCRIPT = """
window.addEventListener("load", function () {
  var loaded = 0, broken = 0, charts = 0;
  document.querySelectorAll("img").forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { loaded++; } else { broken++; }
  });
  document.querySelectorAll("svg.chart").forEach(function (svg) {
    if (svg.getBBox().width > 0) { charts++; }
  });
  document.body.dataset.imagesLoaded = loaded;
  document.body.dataset.imagesBroken = broken;
  document.body.dataset.chartsDrawn = charts;
  if (broken) {
    document.getElementById("status").textContent = broken + " embedded image(s) could not be shown.";
  }
});
"""


def _table_row(anchor: str, row: dict) -> str:
    job = row.get("job") if isinstance(row.get("job"), dict) else {}
    health = row.get("health") if isinstance(row.get("health"), dict) else {}
    usage = row.get("usage") if isinstance(row.get("usage"), dict) else None
    progress = row.get("progress")
    bar = "-" if progress is None else (f'<progress max="1" value="{float(progress):.4f}"></progress> '
                                        f"{100 * float(progress):.0f}%")
    state = text(job.get("state")) + (f"<br><small>{text(job['reason'])}</small>" if job.get("reason") else "")
    health_cell = (f"{text(health.get('state'))}<br><small>{text(health.get('rule') or '')} "
                   f"{evidence_text(health.get('evidence'))}</small>" if health else "-")
    cost = "-" if usage is None or usage.get("cost") is None else f"{float(usage['cost']):.2f}"
    colour = health_class(health.get("state"))
    cells = [f'<a href="#{text(anchor)}">{text(row.get("desc"))}</a>', text(job.get("id")), state,
             health_cell, bar, f"{kimg_text(row.get('kimg'))}/{kimg_text(row.get('total_kimg'))}",
             text(row.get("sec_per_kimg")), duration_text(row.get("eta_sec")), duration_text(row.get("elapsed_sec")),
             attempts_cell(row.get("attempts"), row.get("requeues")), usage_hours_cell(usage), cost,
             headline_metric_cell(row.get("metrics"))]
    classes = [colour if name == "health" and colour else "" for name in TABLE_HEADER]
    return "<tr>" + "".join(f'<td class="{c}">{cell}</td>' if c else f"<td>{cell}</td>"
                            for c, cell in zip(classes, cells)) + "</tr>"


def render_html(rows, generated_utc: str) -> str:
    """The page for the monitor's `rows` (textgan/monitor/run_state.py's schema; keys a row lacks show as "-" or
    are left out), stamped with `generated_utc`."""
    anchors = [f"run-{i}" for i in range(len(rows))]  # ids from the position: a run's name may hold anything
    header = "".join(f"<th>{text(name)}</th>" for name in TABLE_HEADER)
    table = "".join(_table_row(anchor, row) for anchor, row in zip(anchors, rows))
    sections = "".join(run_section(anchor, row) for anchor, row in zip(anchors, rows))
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{text(CONTENT_SECURITY_POLICY)}">',
        f"<title>textgan monitor {text(generated_utc)}</title><style>{STYLE}</style></head>\n<body>",
        f"<h1>textgan monitor</h1><p>{len(rows)} run(s), generated {text(generated_utc)}.</p>",
        '<p id="status"></p>',
        f"<table class=\"runs\"><tr>{header}</tr>{table}</table>\n", sections,
        f"\n<script>{SCRIPT}</script></body></html>\n"])


def write_html(path: str, rows, generated_utc: str) -> None:
    """Write the page to `path` at once (atomically: a browser refreshing it never sees half a page)."""
    write_text_atomic(path, render_html(rows, generated_utc))
