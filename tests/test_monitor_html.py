"""`textgan monitor --html`: the curves read from the tail of a run's files, their downsampling, the newest grid
by the kimg in its name, and the page: every run, escaped text, inline SVG charts, the grid as a data: URI that
decodes to the PNG's bytes, nothing loaded from anywhere (CSP, no http(s) in src/href), written atomically.
The tests marked slow open the page in a real headless Chromium and read back from its DOM that the page
rendered and that its images decoded (and that a broken one is reported broken).

Run directories are written by hand in training's formats, with the helpers of tests/test_monitor.py.
"""

import base64
import io
import json
import math
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser

import pytest
from PIL import Image

from slurm_util import in_ci
from test_monitor import NOW, stats_line, write_run
from textgan.monitor import curves as curves_module
from textgan.monitor import html_run_section, tail
from textgan.monitor.curves import MAX_POINTS, STATS_TICKS, downsample, read_curves
from textgan.monitor.html_page import CONTENT_SECURITY_POLICY, render_html, write_html
from textgan.monitor.latest_grid import grid_kimg, latest_grid
from textgan.monitor.run_state import read_run

NASTY_NAME = '00002-x<b>&"'  # a run directory's name may hold markup characters


class Page(HTMLParser):
    """The parsed page: every start tag with its attributes, and the text (character references resolved)."""

    def __init__(self, source: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.texts = [], []
        self.feed(source)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.texts.append(data)

    def all(self, tag):
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def text(self):
        return "".join(self.texts)


def losses_line(tick, kimg, g_adv, d_real=0.6, d_fake=0.5, r1=0.01):
    line = stats_line(tick, kimg, 20.0 + tick % 3, 10.0 * tick)
    mean = lambda v: {"num": 4, "mean": v, "std": 0.1}  # noqa: E731
    line.update({"Loss/G/adv": mean(g_adv), "Loss/D/adv_real": mean(d_real), "Loss/D/adv_fake": mean(d_fake),
                 "Loss/D/r1": mean(r1)})
    return line


def write_stats(run_dir, lines):
    (run_dir / "stats.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def grid_png(color, size=(24, 16)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def full_run(run_dir, ticks, grid=None):
    """A run with `ticks` stats lines of losses, an FID history, and (grid: PNG bytes) fakes000160.000.png."""
    write_run(run_dir, total_kimg=2 * ticks)
    write_stats(run_dir, [losses_line(t, 2.0 * t, 1.0 + math.sin(t / 7)) for t in range(1, ticks + 1)])
    (run_dir / "metric-fid1k.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [
        {"tick": 1, "kimg": 2.0, "value": 90.0, "results": {"fid": 90.0}},
        {"tick": 5, "kimg": 10.0, "value": 60.0, "results": {"fid": 60.0}},
        {"tick": 9, "kimg": 18.0, "value": 55.0, "results": {"fid": 55.0}}]))
    if grid is not None:
        (run_dir / "fakes000160.000.png").write_bytes(grid)
    return run_dir


def with_lead_keys(row, job_state, health_state, cost):
    """A read_run row with the job, health and usage keys the monitor's Slurm join adds."""
    row = dict(row)
    row["job"] = {"id": "4242_3", "state": job_state, "source": "slurm", "reason": "Priority<QOS>&more",
                  "nodes": 1, "gpus": 4, "cpus": 32, "exit_code": None, "node_list": "gpu[01-02]"}
    row["health"] = {"state": health_state, "rule": "D's real-score gap < 0.1 & rising",
                     "evidence": {"gap": 0.31, "window": 5},
                     "all": [{"state": health_state, "rule": "D's real-score gap < 0.1 & rising",
                              "evidence": {"gap": 0.31}}, {"state": "OK", "rule": "all fine", "evidence": None}]}
    row["usage"] = {"unit": "gpu_hours", "gpu_hours": 12.25, "cpu_core_hours": 98.0, "cost": cost, "source": "slurm"}
    return row


# ----------------------------------------------------------------------------------------------- curves


def test_downsampling_caps_the_points_keeps_both_ends_and_the_extremes():
    points = [(float(i), math.sin(i / 50)) for i in range(2000)]
    points[1234] = (1234.0, 50.0)  # a loss spike: must stay visible
    points[777] = (777.0, -50.0)
    kept = downsample(points)
    assert len(kept) <= MAX_POINTS and len(kept) >= MAX_POINTS - 2
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert (1234.0, 50.0) in kept and (777.0, -50.0) in kept
    assert [k for k, _ in kept] == sorted(k for k, _ in kept) and set(kept) <= set(points)
    assert downsample(points[:MAX_POINTS]) == points[:MAX_POINTS]  # short series: untouched
    assert downsample(points[:201]) != points[:201] and len(downsample(points[:201])) <= MAX_POINTS


def test_curves_hold_the_logged_losses_and_the_metric_history(tmp_path):
    run_dir = write_run(tmp_path / "00000-demo")
    lines = [losses_line(t, 2.0 * t, 1.0 + t) for t in range(1, 6)]
    lines[2]["Loss/G/adv"]["mean"] = float("nan")  # a non-finite tick has no place on the chart
    write_stats(run_dir, lines)
    (run_dir / "metric-fid1k.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [
        {"tick": 1, "kimg": 2.0, "value": 80.0, "results": {"fid": 80.0}},
        {"tick": 2, "kimg": 4.0, "value": 70.0, "results": {"fid": 70.0}},
        {"tick": 2, "kimg": 4.0, "value": 65.0, "results": {"fid": 65.0}},  # measured again after a resume
        {"tick": 3, "kimg": 6.0, "results": {"fid1k": 61.0}}]))  # an older line: no "value"
    got = read_curves(str(run_dir))
    assert set(got["stats"]) == {"Loss/G/adv", "Loss/D/adv_real", "Loss/D/adv_fake", "Loss/D/r1",
                                 "Timing/sec_per_kimg"}  # the validation losses are not logged by this run
    assert got["stats"]["Loss/G/adv"] == [(2.0, 2.0), (4.0, 3.0), (8.0, 5.0), (10.0, 6.0)]
    assert got["stats"]["Timing/sec_per_kimg"] == [(2.0 * t, 20.0 + t % 3) for t in range(1, 6)]
    assert got["metrics"] == {"fid1k": [(2.0, 80.0), (4.0, 65.0), (6.0, 61.0)]}


def test_curves_read_only_the_tail_of_a_50_mb_stats_file(tmp_path, monkeypatch):
    run_dir = write_run(tmp_path / "00000-long")
    old = json.dumps(losses_line(1, -1.0, 999.0)) + "\n"  # the start of the file: never to be parsed
    real = [losses_line(t, float(t), float(t)) for t in range(1, STATS_TICKS + 501)]
    with open(run_dir / "stats.jsonl", "w") as f:
        f.write(old * (50 * 2**20 // len(old)))
        f.write("".join(json.dumps(line) + "\n" for line in real))
    assert os.path.getsize(run_dir / "stats.jsonl") > 50 * 2**20
    read_bytes = []

    class CountingFile(io.FileIO):
        def read(self, size=-1):
            data = super().read(size)
            read_bytes.append(len(data))
            return data

    monkeypatch.setattr(tail, "open", lambda path, mode="rb": CountingFile(path, "r"), raising=False)
    started = time.perf_counter()
    series = curves_module.stats_series(str(run_dir))["Loss/G/adv"]
    seconds = time.perf_counter() - started
    assert [k for k, _ in series] == [float(t) for t in range(501, STATS_TICKS + 501)]  # the last 2000 ticks only
    line_bytes = len(json.dumps(real[-1])) + 1
    assert sum(read_bytes) <= (STATS_TICKS + 1) * line_bytes + 2 * tail.BLOCK  # not the 50 MB before them
    print(f"\n[curves] tail of a 50 MB stats.jsonl: {sum(read_bytes) / 2**20:.1f} MiB read in {seconds:.3f} s")


def test_the_latest_grid_is_chosen_by_the_kimg_in_its_name_not_by_mtime(tmp_path):
    for name in ("fakes000160.000.png", "fakes001000.500.png", "fakes000999.png", "fakes_init.png", "reals.png"):
        (tmp_path / name).write_bytes(b"png")
    os.utime(tmp_path / "fakes000160.000.png", (NOW + 100, NOW + 100))  # touched last (copied back, say)
    assert latest_grid(str(tmp_path)) == (str(tmp_path / "fakes001000.500.png"), 1000.5)
    assert (grid_kimg("fakes000012.345.png"), grid_kimg("fakes000012.png"), grid_kimg("fakes.png")) == (
        12.345, 12.0, None)
    assert latest_grid(str(tmp_path / "missing")) is None


# ------------------------------------------------------------------------------------------------- page


@pytest.fixture
def two_runs(tmp_path):
    """Two runs (one named with markup characters), 500 ticks each, their grids, and the rows for them."""
    grids = {"00001-coco": grid_png((200, 30, 30)), NASTY_NAME: grid_png((30, 30, 200), size=(40, 20))}
    dirs = [full_run(tmp_path / "runs" / name, 500, grid=png) for name, png in grids.items()]
    (dirs[0] / "attempts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [
        {"event": "start", "attempt": 1, "job_id": "4242_3", "hosts": "gpu01", "utc": "t0"},
        {"event": "end", "attempt": 1, "job_id": "4242_3", "hosts": "gpu01", "utc": "t1", "outcome": "requeued",
         "kimg": 500.0},
        {"event": "start", "attempt": 2, "job_id": "4242_3", "hosts": "gpu02", "utc": "t2"}]))
    rows = [with_lead_keys(read_run(str(dirs[0]), now=NOW), "RUNNING", "DIVERGING", 12.5),
            with_lead_keys(read_run(str(dirs[1]), now=NOW), "PENDING", "OVERFITTING", None)]
    rows[0]["attempts"][0].update(cause="preemption", elapsed_sec=3600.0)  # keys the Slurm join adds
    return dirs, rows, grids


def test_the_page_shows_every_run_escaped_with_charts_and_the_grid_bytes(two_runs):
    dirs, rows, grids = two_runs
    source = render_html(rows, "2026-01-02T03:04:05Z")
    page = Page(source)
    # Every run, with its name and path as text, never as markup.
    for run_dir in dirs:
        assert run_dir.name in page.text and str(run_dir) in page.text
    assert '<b>&"' not in source and "x&lt;b&gt;&amp;&quot;" in source and page.all("b") == []
    assert "Priority<QOS>&more" in page.text and "Priority<QOS>" not in source
    # Nothing is loaded from anywhere: the CSP meta, and only data: and in-page links.
    assert {"http-equiv": "Content-Security-Policy", "content": CONTENT_SECURITY_POLICY} in page.all("meta")
    links = [attrs[key] for _, attrs in page.tags for key in ("src", "href") if key in attrs]
    assert len(links) == 4 and all(link.startswith(("data:image/png;base64,", "#run-")) for link in links)
    assert "http://" not in source and "https://" not in source
    # The table: one line per run with its job, colour-coded health, usage, cost and headline metric.
    table = source[source.index('<table class="runs">'):source.index("</table>")]
    assert table.count("<tr>") == 3
    assert '<td class="red">DIVERGING' in table and '<td class="amber">OVERFITTING' in table
    assert "4242_3" in table and "12.25 GPU h" in table and "12.50" in table
    assert "fid1k 55" in table and "best 55 @ 18 kimg" in table and "1000/1000" in table
    assert "2: running" in table  # two attempts, the second still running
    # The first run's section: its attempts with every key they have, the job's details, every health rule.
    attempts = source[source.index('<table class="attempts">'):]
    attempts = attempts[:attempts.index("</table>")]
    assert re.findall(r"<th>(.*?)</th>", attempts) == ["attempt", "job_id", "hosts", "started_utc", "ended_utc",
                                                       "elapsed_sec", "outcome", "cause", "kimg"]
    assert "<td>1:00:00</td><td>requeued</td><td>preemption</td>" in attempts
    assert "gpu[01-02]" in page.text and "gap=0.31, window=5" in page.text and "all fine" in page.text
    # The charts: 500 ticks, each series downsampled to MAX_POINTS; the polyline holds exactly those points.
    charts = {svg["aria-label"]: svg for svg in page.all("svg")}
    assert set(charts) >= {"Loss/G/adv", "Loss/D/adv_real", "Loss/D/r1", "Timing/sec_per_kimg", "fid1k"}
    polylines = [attrs["points"].split() for attrs in page.all("polyline")]
    expected = read_curves(str(dirs[0]))
    assert len(expected["stats"]["Loss/G/adv"]) <= MAX_POINTS
    per_run = len(polylines) // 2
    assert per_run == len(charts) == 6
    assert len(polylines[0]) == len(expected["stats"]["Loss/G/adv"])  # the first run's first chart
    assert len(polylines[per_run - 1]) == 3  # its last: fid1k's three evaluations
    # The grids: each data URI decodes to the exact PNG, captioned with its kimg.
    images = [attrs["src"] for attrs in page.all("img")]
    assert [base64.b64decode(src.split(",", 1)[1]) for src in images] == list(grids.values())
    assert page.text.count("Latest samples at kimg 160 (fakes000160.000.png)") == 2


def test_a_row_without_the_job_health_and_usage_keys_still_renders(tmp_path):
    row = read_run(str(write_run(tmp_path / "00000-demo")), now=NOW)
    source = render_html([row], "2026-01-02T03:04:05Z")
    page = Page(source)
    cells = re.findall(r"<td>(.*?)</td>", source)
    assert cells[1:4] == ["-", "-", "-"] and cells[5] == "8/10"  # job, state, health; kimg
    assert "No sample grid yet." in page.text and page.all("img") == []


def test_a_grid_over_the_embedding_limit_is_named_instead_of_embedded(two_runs, monkeypatch):
    dirs, rows, grids = two_runs
    monkeypatch.setattr(html_run_section, "MAX_EMBEDDED_GRID_BYTES", len(grids["00001-coco"]) - 1)
    page = Page(render_html(rows[:1], "u"))
    assert page.all("img") == []
    assert f"{dirs[0] / 'fakes000160.000.png'} is" in page.text and "not embedded" in page.text


def test_write_html_writes_the_page_and_nothing_else(two_runs, tmp_path):
    _, rows, _ = two_runs
    out = tmp_path / "pages"
    out.mkdir()
    write_html(str(out / "monitor.html"), rows, "2026-01-02T03:04:05Z")
    assert os.listdir(out) == ["monitor.html"]
    assert (out / "monitor.html").read_text(encoding="utf-8") == render_html(rows, "2026-01-02T03:04:05Z")


# -------------------------------------------------------------------------------------- a real browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    found = next((path for path in map(shutil.which, BROWSERS) if path), None)
    if found is None:
        reason = (f"no Chromium found (looked for {', '.join(BROWSERS)}): apt-get install chromium "
                  "(.ci/install-chromium)")
        if in_ci():  # CI must open the page for real: never a silent skip there
            pytest.fail(f"{reason} (CI=true)", pytrace=False)
        pytest.skip(reason)
    return found


def dump_dom(page_path, tmp_path) -> Page:
    """The DOM of the page after load, as headless Chromium serialises it (the page's script has run)."""
    proc = subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--virtual-time-budget=5000", "--dump-dom", f"file://{page_path}"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Page(proc.stdout)


def body_data(page: Page) -> dict:
    (body,) = page.all("body")
    return body


@pytest.mark.slow
def test_chromium_renders_every_run_its_charts_and_every_grid(two_runs, tmp_path):
    dirs, rows, _ = two_runs
    path = tmp_path / "monitor.html"
    write_html(str(path), rows, "2026-01-02T03:04:05Z")
    started = time.perf_counter()
    dom = dump_dom(path, tmp_path)
    print(f"\n[chromium] page loaded and dumped in {time.perf_counter() - started:.1f} s")
    body = body_data(dom)
    charts = Page(path.read_text(encoding="utf-8")).all("svg")
    assert (body.get("data-images-loaded"), body.get("data-images-broken"), body.get("data-charts-drawn")) == (
        "2", "0", str(len(charts)))
    for run_dir in dirs:
        assert run_dir.name in dom.text


@pytest.mark.slow
def test_chromium_reports_a_broken_grid_as_broken(two_runs, tmp_path):
    """The check above can fail: a grid whose data URI is not a PNG counts as broken, and the page says so."""
    _, rows, grids = two_runs
    source = render_html(rows, "u")
    good = base64.b64encode(grids["00001-coco"]).decode("ascii")
    assert good in source
    path = tmp_path / "broken.html"
    path.write_text(source.replace(good, base64.b64encode(b"not a png at all").decode("ascii")), encoding="utf-8")
    dom = dump_dom(path, tmp_path)
    body = body_data(dom)
    assert (body.get("data-images-loaded"), body.get("data-images-broken")) == ("1", "1")
    assert "1 embedded image(s) could not be shown." in dom.text
