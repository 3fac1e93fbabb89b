"""Metrics during training: a run records periodic metrics (metric-NAME.jsonl, TensorBoard values and
timing), keeps the best checkpoint in RUN/best/ (its own root, which keep_checkpoints never prunes) and
across a resume, and a contaminated reference stops the run before it trains.

Real components: training_loop on 2 gloo ranks (DeepSpeed, CPU) over 16-px shapes shards, the tiny
feature extractor of metrics_fixture registered in each rank (a launcher subprocess could not see it).
"""

import os

import pytest
import torch
from dist_util import run_ranks
from metrics_fixture import TINY_EXTRACTOR, register_tiny_extractor
from test_train_e2e import ROOT, TINY, shards  # noqa: F401  (shards is a fixture: 128 shapes at 16 px)

from textgan.config import load_config
from textgan.errors import UsageError
from textgan.files import read_jsonl, sha256_file

DEMO = os.path.join(ROOT, "configs", "demo.yaml")
PRIMARY = "fid64_train"  # the first metric listed decides the best checkpoint (lower is better)


def train_worker(rank, world_size, overrides, run_dir, resume):
    from metrics_fixture import register_tiny_extractor

    from textgan.runtime import Runtime
    from textgan.train.loop import training_loop

    register_tiny_extractor()
    cfg = load_config(DEMO, overrides)
    runtime = Runtime.from_env()
    runtime.init_distributed()
    os.makedirs(run_dir, exist_ok=True)
    return training_loop(cfg, runtime, run_dir, resume=resume)


def _overrides(shards_dir, cache, total_kimg, metrics=(PRIMARY, "shapes_alignment")):
    return TINY + [f"data.shards={shards_dir}", f"schedule.total_kimg={total_kimg}", "schedule.keep_checkpoints=1",
                   "schedule.image_snapshot_ticks=100", "dist.num_threads=1",
                   f"metrics.metrics=[{','.join(metrics)}]", "metrics.metrics_ticks=1", "metrics.num_samples=32",
                   f"metrics.feature_extractor={TINY_EXTRACTOR}", "metrics.batch_size=16", f"metrics.cache_dir={cache}"]


def _lines(run_dir, name):
    return read_jsonl(os.path.join(run_dir, f"metric-{name}.jsonl"))


def _scalars(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def _best_record(run_dir):
    client = torch.load(os.path.join(run_dir, "best", PRIMARY, "client_state.pt"), weights_only=True)
    return client["best_metric"]


def _complete(root):
    return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "COMPLETE")))


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_run_records_metrics_keeps_the_best_checkpoint_and_resumes_with_it(tmp_path, shards):  # noqa: F811
    run_dir, cache = str(tmp_path / "run"), str(tmp_path / "cache")
    first = run_ranks(train_worker, tmp_path, 2, args=(_overrides(shards, cache, 0.048), run_dir, None))

    fid = _lines(run_dir, PRIMARY)
    assert [(x["tick"], x["kimg"]) for x in fid] == [(1, 0.016), (2, 0.032), (3, 0.048)]
    # each result names the checkpoint of its tick (network_snapshot_ticks=1) and its protocol
    assert [x["snapshot"] for x in fid] == [os.path.join(run_dir, "checkpoints", t) for t in ("000000.016", "000000.032", "000000.048")]
    assert fid[0]["protocol"]["reference"]["split"] == "train" and fid[0]["protocol"]["num_samples"] == 64
    assert fid[0]["protocol"]["extractor"]["name"] == TINY_EXTRACTOR and len({x["value"] for x in fid}) == 3
    align = _lines(run_dir, "shapes_alignment")
    assert [x["tick"] for x in align] == [1, 2, 3] and align[-1]["results"]["n"] == 32
    # the demo's reference is its training shards, used for captions only: no leakage check applies
    assert align[0]["protocol"]["leakage"]["checked"] is False
    assert "only captions" in align[0]["protocol"]["leakage"]["reason"]

    # TensorBoard: the values, per-criterion numbers, and what the metrics cost
    assert [v for _, v in _scalars(run_dir, f"Metrics/{PRIMARY}")] == pytest.approx([x["value"] for x in fid])
    assert [s for s, _ in _scalars(run_dir, f"Metrics/{PRIMARY}")] == [16, 32, 48]  # global step = cur_nimg
    color = [x["results"]["color"] for x in align]
    assert [v for _, v in _scalars(run_dir, "Metrics/shapes_alignment/color")] == pytest.approx(color)
    fractions = [v for _, v in _scalars(run_dir, "Timing/metrics_fraction")]
    assert len(fractions) == 3 and all(0 < f < 1 for f in fractions)
    assert all(v > 0 for _, v in _scalars(run_dir, "Timing/metrics_sec"))
    assert all(v > 0 for _, v in _scalars(run_dir, f"Timing/metrics/{PRIMARY}_images_per_sec"))

    # the best checkpoint: the lowest FID's, in its own root, untouched by keep_checkpoints=1
    best = min(fid, key=lambda x: x["value"])
    record = _best_record(run_dir)
    assert (record["value"], record["kimg"], record["metric"]) == (best["value"], best["kimg"], PRIMARY)
    assert _complete(os.path.join(run_dir, "checkpoints")) == ["000000.048"]  # only the newest regular one
    assert _complete(os.path.join(run_dir, "best")) == [PRIMARY]
    assert first[0]["best_checkpoint"] == os.path.join(run_dir, "best", PRIMARY)
    assert first[0]["best_metric"] == record and first[1]["best_metric"] == record  # ranks agree
    printed = first[0]["shapes_alignment"]
    assert set(printed) >= {"color", "position", "relation", "shape", "overall", "n", "one_object", "two_objects"}
    assert printed["color"] == round(align[-1]["results"]["color"], 4)  # rounded for the log, nested ones too
    assert printed["one_object"]["n"] + printed["two_objects"]["n"] == printed["n"]
    assert all(v == round(v, 4) for v in printed["two_objects"].values() if isinstance(v, float))

    # the checkpoint holds the G_ema that scored the value: measuring it again gives the same FID
    from textgan.export import load_generator_from_checkpoint
    from textgan.metrics import MetricEvaluator, MetricsConfig
    from textgan.runtime import Runtime
    from textgan.train.text import TextConditioner

    G, cfg, info = load_generator_from_checkpoint(os.path.join(run_dir, "best", PRIMARY))
    assert info["kimg"] == best["kimg"] and info["run_dir"] == run_dir
    register_tiny_extractor()
    again = MetricEvaluator(MetricsConfig(metrics=[PRIMARY], cache_dir=cache, feature_extractor=TINY_EXTRACTOR,
                                          batch_size=16),
                            runtime=Runtime.from_env(device="cpu", env={}, argv=[]), train_shards=shards,
                            log=lambda *a: None).run(G, TextConditioner(cfg.text_encoder, {}, "cpu").encode)
    assert again[PRIMARY].value == pytest.approx(best["value"], rel=1e-4)

    # Resume for two more ticks with the record set to a value no tick can beat: the resumed run must read
    # the best back from its checkpoint and keep it, while checkpoints/ is rewritten at every tick.
    best_dir = os.path.join(run_dir, "best", PRIMARY)
    client = torch.load(os.path.join(best_dir, "client_state.pt"), weights_only=True)
    client["best_metric"]["value"] = 0.0
    torch.save(client, os.path.join(best_dir, "client_state.pt"))
    weights = sha256_file(os.path.join(best_dir, "weights.pt"))
    second = run_ranks(train_worker, tmp_path, 2, args=(_overrides(shards, cache, 0.080), run_dir, "auto"))
    fid = _lines(run_dir, PRIMARY)
    assert [x["tick"] for x in fid] == [1, 2, 3, 4, 5] and min(x["value"] for x in fid) > 0
    assert _best_record(run_dir) == {**record, "value": 0.0} == second[0]["best_metric"]
    assert sha256_file(os.path.join(best_dir, "weights.pt")) == weights  # not overwritten by a worse G_ema
    assert second[0]["kimg"] == 0.080 and _complete(os.path.join(run_dir, "checkpoints")) == ["000000.080"]


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_reference_that_overlaps_the_training_shards_stops_the_run_before_training(tmp_path, shards):  # noqa: F811
    # fid32 against the demo's reference, i.e. the training shards themselves: every image leaks
    run_dir = str(tmp_path / "run")
    overrides = _overrides(shards, str(tmp_path / "cache"), 0.032, metrics=("fid32",))
    with pytest.raises(RuntimeError, match="LEAKAGE: 128 reference image ids"):
        run_ranks(train_worker, tmp_path, 1, args=(overrides, run_dir, None))
    assert not os.path.exists(os.path.join(run_dir, "stats.jsonl"))
    assert not os.path.exists(os.path.join(run_dir, "checkpoints"))


def test_recipes_name_their_metrics_and_reference():
    demo = load_config(DEMO)
    assert list(demo.metrics.metrics) == ["shapes_alignment"] and demo.metrics.reference == demo.data.shards
    assert demo.metrics.metrics_ticks == demo.schedule.image_snapshot_ticks  # as often as the old snapshots
    for res in (64, 128, 256):
        cfg = load_config(os.path.join(ROOT, "configs", f"coco{res}.yaml"))
        assert list(cfg.metrics.metrics) == ["fid10k", "clip_score"]
        assert cfg.metrics.reference == f"shards/coco{res}-val" and cfg.metrics.feature_extractor == "inception-v3-compat"
    research = load_config(os.path.join(ROOT, "configs", "research", "symmetric.yaml"))
    assert research.metrics.reference == "shards/coco256-val"  # inherited through base:


@pytest.mark.parametrize("override, message", [
    ("metrics.metrics=[fid]", "needs a sample count"),
    ("metrics.metrics=[fid10k,fid10k]", "listed twice"),
    ("metrics.metrics_ticks=-1", "metrics.metrics_ticks must be >= 0"),
    ("metrics.diversity_samples=1", "metrics.diversity_samples must be >= 2"),
    ("metrics.metric=[fid10k]", "Did you mean 'metrics.metrics'"),
])
def test_bad_metrics_settings_are_refused_by_the_config(override, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        load_config(DEMO, [override])


def test_textgan_eval_is_a_subcommand(capsys):
    from textgan import cli

    assert cli.main(["eval", "--help"]) == 0
    assert "RUN_OR_CHECKPOINT" in capsys.readouterr().out
    assert cli.main(["eval", "/nonexistent/run", "--metrics", "fid10k"]) == 2
    assert "does not exist" in capsys.readouterr().err
