"""launchers/sweep.py: grid expansion, every point validated before submitting, a local sweep of real
(tiny) training runs, and the results table + TensorBoard hparams that `collect` refreshes."""

import csv
import json
import os
import subprocess
import sys

import pytest

from test_train_e2e import ROOT, TINY, shards  # noqa: F401  (shards is a fixture)
from textgan.errors import UsageError
from textgan.launch.results import metric_summary, point_row
from textgan.launch.sweep_grid import expand_grid, load_grid

SWEEP = os.path.join(ROOT, "launchers", "sweep.py")
DEMO = os.path.join(ROOT, "configs", "demo.yaml")


def write(path, text):
    path.write_text(text)
    return str(path)


def test_the_grid_is_a_cartesian_product_named_after_its_overrides(tmp_path):
    grid = load_grid(write(tmp_path / "g.yaml", "grid:\n  loss.r1_gamma: [1, 10.5]\n  augment.kind: [ada, none, "
                                                "diffaugment]\nfixed:\n  schedule.total_kimg: 5\n"))
    points = expand_grid(grid)
    assert len(points) == 6 and grid.name == "g"
    assert [p.name for p in points[:3]] == ["000-r1_gamma=1-kind=ada", "001-r1_gamma=1-kind=none",
                                            "002-r1_gamma=1-kind=diffaugment"]
    assert points[5].overrides == ["schedule.total_kimg=5", "loss.r1_gamma=10.5", "augment.kind=diffaugment"]
    assert points[5].values == {"loss.r1_gamma": 10.5, "augment.kind": "diffaugment"}
    # keys that share their last component keep their full name
    same = expand_grid(load_grid(write(tmp_path / "s.yaml", "grid:\n  model.size: [1]\n  other.size: [2]\n")))
    assert same[0].name == "000-model.size=1-other.size=2"


def test_grid_values_read_as_recipes_read_them(tmp_path):
    """Grids and recipes share one YAML reader: 1e-3 is the float 0.001 in both (plain PyYAML reads an
    exponent without a dot as the string '1e-3', which would reach the config as a quoted string)."""
    grid = load_grid(write(tmp_path / "g.yaml", "grid:\n  optim.G_lr: [1e-3, 2.5e-3]\nfixed:\n  loss.r1_gamma: 1e-1\n"))
    points = expand_grid(grid)
    assert [p.values["optim.G_lr"] for p in points] == [0.001, 0.0025]
    assert points[0].overrides == ["loss.r1_gamma=0.1", "optim.G_lr=0.001"]
    with pytest.raises(UsageError, match=r"grid file .*missing.yaml does not exist \(see configs/sweeps/"):
        load_grid(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize("text, message", [
    ("fixed:\n  a.b: 1\n", "needs a 'grid:' mapping"),
    ("grid:\n  a.b: 3\n", "non-empty list"),
    ("grid:\n  a.b: [1, 1]\n", "value twice"),
    ("grid:\n  a.b: [1]\nfixed:\n  a.b: 2\n", "both swept and fixed"),
    ("grid:\n  a.b: [1]\nextra: 1\n", "unknown top-level"),
    ("grid: [\n", "not valid YAML"),
])
def test_malformed_grids_are_explained(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        load_grid(write(tmp_path / "g.yaml", text))


def test_shipped_grids_expand_to_the_research_sweeps():
    points = expand_grid(load_grid(os.path.join(ROOT, "configs", "sweeps", "contrastive_weights.yaml")))
    assert len(points) == 125
    assert points[0].overrides == ["contrastive.C_it=0.5", "contrastive.C_ii=0.5", "contrastive.h=0.1"]
    assert points[-1].name == "124-C_it=5-C_ii=5-h=2"
    sizes = expand_grid(load_grid(os.path.join(ROOT, "configs", "sweeps", "model_size.yaml")))
    assert len(sizes) == 12 and {p.values["augment.kind"] for p in sizes} == {"ada", "none"}
    conditioning = expand_grid(load_grid(os.path.join(ROOT, "configs", "sweeps", "conditioning.yaml")))
    assert [p.overrides for p in conditioning[:2]] == [["model.c_norm=none", "loss.kind=nonsaturating"],
                                                      ["model.c_norm=none", "loss.kind=rpgan"]]
    assert len(conditioning) == 6 and conditioning[-1].name == "005-c_norm=whiten-kind=rpgan"


def test_metric_summary_latest_best_and_direction(tmp_path):
    lines = [{"tick": 1, "kimg": 1.0, "results": {"fid10k": 50.0}},
             {"tick": 2, "kimg": 2.0, "results": {"fid10k": 30.0}},
             {"tick": 3, "kimg": 3.0, "results": {"fid10k": 40.0}}]
    path = tmp_path / "metric-fid10k.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"tick": 4, "kimg"')  # torn last line
    assert metric_summary(str(path)) == {"fid10k": {"latest": 40.0, "best": 30.0, "best_kimg": 2.0}}
    align = tmp_path / "metric-shapes_alignment.jsonl"
    align.write_text(json.dumps({"tick": 1, "kimg": 1.0, "results": {"colour": 0.2, "position": 0.5, "n": 256}}) + "\n"
                     + json.dumps({"tick": 2, "kimg": 2.0, "results": {"colour": 0.6, "position": 0.4, "n": 256}}) + "\n"
                     # a resumed run measured tick 2 again: the last measurement counts
                     + json.dumps({"tick": 2, "kimg": 2.0, "results": {"colour": 0.7, "position": 0.4, "n": 256}}) + "\n")
    found = metric_summary(str(align))
    assert found["shapes_alignment/colour"] == {"latest": 0.7, "best": 0.7, "best_kimg": 2.0}
    assert found["shapes_alignment/position"] == {"latest": 0.4, "best": 0.5, "best_kimg": 1.0}
    assert "shapes_alignment/n" not in found
    assert point_row(str(tmp_path))["metrics"]["fid10k"]["best"] == 30.0


def test_metric_summary_reads_the_evaluators_headline_value(tmp_path):
    # textgan.metrics writes {"value": FID, "results": {"fid": FID, ...}}: the column is the metric itself
    lines = [{"tick": 1, "kimg": 1.0, "value": 50.0, "results": {"fid": 50.0}},
             {"tick": 2, "kimg": 2.0, "value": 35.0, "results": {"fid": 35.0}}]
    path = tmp_path / "metric-fid10k.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    found = metric_summary(str(path))
    assert found["fid10k"] == {"latest": 35.0, "best": 35.0, "best_kimg": 2.0}


def run_sweep(*args, timeout=600):
    return subprocess.run([sys.executable, SWEEP, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _sets(shards_dir, total_kimg):  # noqa: F811
    return [x for kv in TINY + [f"data.shards={shards_dir}", f"schedule.total_kimg={total_kimg}",
                                "schedule.image_snapshot_ticks=100"] for x in ("--set", kv)]


def test_a_bad_point_stops_the_whole_sweep_before_anything_exists(tmp_path, shards):  # noqa: F811
    grid = write(tmp_path / "g.yaml", "grid:\n  schedule.batch_size: [8, 10]\n")
    proc = run_sweep("--config", DEMO, "--grid", grid, "--outdir", str(tmp_path / "runs"), "--local",
                     *_sets(shards, 0.016))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "sweep point 001-batch_size=10" in proc.stderr and "multiple of" in proc.stderr
    assert not os.path.exists(tmp_path / "runs")


def test_dry_run_lists_points_and_one_array_script(tmp_path, shards):  # noqa: F811
    grid = write(tmp_path / "g.yaml", "grid:\n  loss.r1_gamma: [1, 2]\n  model.size: [0.5, 1.0]\n")
    proc = run_sweep("--config", DEMO, "--grid", grid, "--outdir", str(tmp_path / "runs"), "--dry-run",
                     "--max-parallel", "2", "--partition", "cpu", *_sets(shards, 0.016))
    assert proc.returncode == 0, proc.stderr
    assert "4 point(s)" in proc.stdout and "003-r1_gamma=2-size=1.0" in proc.stdout
    assert "#SBATCH --array=0-3%2" in proc.stdout and "#SBATCH --partition=cpu" in proc.stdout
    assert "%A_%a_%t_log.out" in proc.stdout
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_local_sweep_trains_each_point_in_its_own_run_dir_and_collects_a_table(tmp_path, shards):  # noqa: F811
    grid = write(tmp_path / "lr.yaml", "grid:\n  optim.G_lr: [0.001, 0.002]\n")
    proc = run_sweep("--config", DEMO, "--grid", grid, "--outdir", str(tmp_path / "runs"), "--local",
                     *_sets(shards, 0.016))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    sweep_dir = tmp_path / "runs" / "00000-sweep-lr"
    names = ["000-G_lr=0.001", "001-G_lr=0.002"]
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p["name"] for p in sweep["points"]] == names
    for name, lr in zip(names, (0.001, 0.002)):
        assert f"G_lr: {lr}" in (sweep_dir / name / "config.yaml").read_text()

    with open(sweep_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["point"] for r in rows] == names and [r["optim.G_lr"] for r in rows] == ["0.001", "0.002"]
    assert all(r["kimg"] == "0.016" and r["status"] == "finished" and r["requeues"] == "0" for r in rows)
    alignment = json.loads((sweep_dir / names[0] / "metric-shapes_alignment.jsonl").read_text().splitlines()[-1])
    assert rows[0]["shapes_alignment/color latest"] == f"{alignment['results']['color']:.4g}"
    assert rows[0]["Loss/G/adv"] != rows[1]["Loss/G/adv"]  # two learning rates, two different runs
    markdown = (sweep_dir / "results.md").read_text()
    assert "| point | optim.G_lr | status |" in markdown and "- best shapes_alignment/color:" in markdown

    # collect again (e.g. while a sweep runs): the table is rewritten, the hparams file replaced, not added
    again = run_sweep("collect", str(sweep_dir))
    assert again.returncode == 0, again.stderr
    assert "000-G_lr=0.001" in again.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name in names:
        files = [f for f in os.listdir(sweep_dir / name) if f.endswith(".sweep-hparams")]
        assert len(files) == 1, files
        events = EventAccumulator(str(sweep_dir / name))
        events.Reload()
        assert events.Scalars("Sweep/kimg")[-1].value == pytest.approx(0.016)
        assert "_hparams_/session_start_info" in events.summary_metadata


def test_collect_refuses_a_directory_that_is_not_a_sweep(tmp_path):
    proc = run_sweep("collect", str(tmp_path))
    assert proc.returncode == 2 and "not a sweep directory" in proc.stderr
