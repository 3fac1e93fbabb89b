"""Turning the monitor's row values into escaped HTML text, shared by the page's table and its run sections.

Every value that reaches the page goes through `text` (or a helper built on it): run names, paths, captions,
Slurm reasons and rule evidence may hold <, & and quotes, and must show as text, never as markup.
"""

import html

from textgan.monitor.table import duration, last_outcome

# Health states by how urgently a person must look: red needs action now, amber a look, green nothing.
RED_STATES = frozenset({"NONFINITE", "OOM", "FAILED", "STALLED", "TIMEOUT", "DIVERGING"})
AMBER_STATES = frozenset({"OVERFITTING", "DATA", "PREEMPTED", "REQUEUED", "PENDING", "CANCELLED"})


def text(value) -> str:
    """Escaped text of any value; "-" for None (a column the row has no value for)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        # 4 significant digits, but never an exponent for large counts (12345.6 GPU hours, not 1.235e+04)
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return html.escape(str(value))


def kimg_text(kimg) -> str:
    """kimg to the image, as the file tags write it (160.5, 1234.567), never rounded to 4 digits."""
    return "-" if kimg is None else f"{float(kimg):.3f}".rstrip("0").rstrip(".")


def duration_text(seconds) -> str:
    return text(duration(seconds))


def health_class(state) -> str:
    """The CSS class that colours a health state's cell ("" for an unknown state: no colour claims nothing)."""
    if state in RED_STATES:
        return "red"
    if state in AMBER_STATES:
        return "amber"
    return "green" if state == "OK" else ""


def evidence_text(evidence) -> str:
    """A rule's evidence ({"name": number, ...}, a list or a sentence) as one escaped line."""
    if isinstance(evidence, dict):
        return text(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in evidence.items()))
    if isinstance(evidence, (list, tuple)):
        return text(", ".join(str(v) for v in evidence))
    return "" if evidence is None else text(evidence)


def headline_metric(metrics) -> tuple:
    """(column, summary) of the first metric column without a '/' (a metric's headline number), else (None, None),
    as the text table picks it."""
    for column, summary in (metrics or {}).items():
        if "/" not in column and isinstance(summary, dict):
            return column, summary
    return None, None


def headline_metric_cell(metrics) -> str:
    column, m = headline_metric(metrics)
    if column is None:
        return "-"
    trend = f" ({text(m['trend'])})" if m.get("trend") else ""  # vs the evaluation before
    return (f"{text(column)} {text(m.get('latest'))}{trend}<br><small>best {text(m.get('best'))} @ "
            f"{kimg_text(m.get('best_kimg'))} kimg</small>")


def usage_hours_cell(usage) -> str:
    """GPU hours for a GPU run, CPU core hours for a CPU run (usage["unit"] says which)."""
    if not isinstance(usage, dict):
        return "-"
    if usage.get("unit") == "cpu_core_hours":
        return f"{text(usage.get('cpu_core_hours'))} CPU core h"
    return f"{text(usage.get('gpu_hours'))} GPU h"


def attempts_cell(attempts, requeues) -> str:
    """Number of attempts and how the last one ended (Slurm's state for an attempt killed without a word,
    "running" while it has no end)."""
    if not attempts:
        return "-"
    last = last_outcome(attempts)
    requeued = f" ({text(requeues)} requeues)" if requeues else ""
    return f"{len(attempts)}: {text(last)}{requeued}"
