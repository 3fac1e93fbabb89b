"""A small line chart as inline SVG text: one series of (kimg, value), axes, min/max labels and a title.

Written by hand rather than with a plotting library: the monitor imports no numpy (it must start at once on
a login node, and matplotlib needs numpy), and matplotlib takes ~50 ms per figure, which for a page of 1,000
runs with several charts each is minutes per refresh. A polyline and a few labels are all a trend needs.
"""

import html
from typing import List, Tuple

WIDTH = 320
HEIGHT = 150
LEFT = 58    # room for the value labels
RIGHT = 10
TOP = 20     # room for the title
BOTTOM = 24  # room for the kimg labels


def _label(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"  # 12345 kimg, not 1.234e+04


def _scale(value: float, low: float, high: float, start: float, end: float) -> float:
    """`value` in [low, high] mapped onto [start, end]; the middle when the range is a single value."""
    if high == low:
        return (start + end) / 2
    return start + (value - low) / (high - low) * (end - start)


def polyline_points(points: List[Tuple[float, float]]) -> str:
    """The polyline's "x,y x,y ..." in the chart's pixel coordinates (y grows downwards in SVG)."""
    kimgs = [k for k, _ in points]
    values = [v for _, v in points]
    k_low, k_high, v_low, v_high = min(kimgs), max(kimgs), min(values), max(values)
    return " ".join(f"{_scale(k, k_low, k_high, LEFT, WIDTH - RIGHT):.1f},"
                    f"{_scale(v, v_low, v_high, HEIGHT - BOTTOM, TOP):.1f}" for k, v in points)


def line_chart(title: str, points: List[Tuple[float, float]]) -> str:
    """An <svg> element (HTML-embeddable text) charting `points` (kimg, value); every text is escaped."""
    if not points:
        return ""
    kimgs = [k for k, _ in points]
    values = [v for _, v in points]
    line = polyline_points(points)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM
    text = lambda x, y, s, anchor="start": (  # noqa: E731
        f'<text x="{x}" y="{y}" text-anchor="{anchor}">{html.escape(s)}</text>')
    # A single point draws no line: a dot shows it.
    dot = "" if len(points) > 1 else f'<circle cx="{line.split(",")[0]}" cy="{line.split(",")[1]}" r="2.5"/>'
    return "".join([
        f'<svg class="chart" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{html.escape(title)}">',
        text(x0, 13, title),
        f'<path class="axis" d="M{x0},{y0} V{y1} H{x1}"/>',
        f'<polyline points="{line}"/>', dot,
        text(x0 - 4, y0 + 4, _label(max(values)), "end"), text(x0 - 4, y1, _label(min(values)), "end"),
        text(x0, HEIGHT - 6, f"{_label(min(kimgs))} kimg"), text(x1, HEIGHT - 6, f"{_label(max(kimgs))} kimg", "end"),
        "</svg>"])
