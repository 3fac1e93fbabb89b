"""D's loss on held-out reals (data.val_shards): Loss/D/val_real and Loss/D/train_real in every tick.

- The fixed sets: the first data.val_images readable samples in file order, as batches of batch_gpu.
- Split across ranks, the per-image losses are those of one process (simulated ranks in one process here;
  real ranks below), every rank runs as many D forwards (ZeRO-3 needs it), D's modes come back as they were.
- A real 2-rank run (DeepSpeed ZeRO-3 for D, gloo, shapes shards): both stats in every tick of stats.jsonl,
  the final tick's values equal D of the final checkpoint on images and captions read here from the tars,
  a run stopped mid-tick and resumed reports the same stats, and a run without val_shards trains exactly alike.
- A bad data.val_shards exits 2 at submission naming the key, and nothing is created.
"""

import io
import json
import os
import tarfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dist_util import C_DIM, RESOLUTION, run_ranks, tiny_cfg, tiny_networks
from launcher_util import created, run_main, submit_launcher
from PIL import Image
from shard_fixture import write_shards
from test_requeue import train_worker
from test_train_e2e import ROOT, TINY, deterministic, shards, stats_lines  # noqa: F401  (shards: a fixture)

from textgan.data.decode import to_float_image
from textgan.errors import UsageError
from textgan.train.stats import StatsCollector
from textgan.train.val_real import TRAIN_STAT, VAL_STAT, ValRealLoss, first_batches, fixed_set

DEMO = os.path.join(ROOT, "configs", "demo.yaml")


def _ids(batches):
    return [b["image_id"].tolist() for b in batches]


# ---------------------------------------------------------------------- the fixed sets


def test_the_fixed_set_is_the_first_readable_samples_in_file_order(tmp_path):
    write_shards(tmp_path, n_samples=20, samples_per_shard=6, corrupt=(2,))  # 4 tars; id 2 does not decode
    batches = first_batches(str(tmp_path), 9, 4)
    assert _ids(batches) == [[0, 1, 3, 4], [5, 6, 7, 8], [9]]  # across tar boundaries, the last one short
    assert batches[0]["caption"][0].startswith("image 0 caption") and batches[0]["pixels"].shape == (4, 16, 16, 3)
    assert _ids(first_batches(str(tmp_path), 9, 4)) == _ids(batches)  # read again: the same set
    with pytest.raises(UsageError, match=r"'data.val_images' is 20, but data.val_shards .* holds only 19"):
        first_batches(str(tmp_path), 20, 4)


def _c_of(batch):
    """A condition that is a function of each image id alone (the unit tests need no text tower)."""
    g = torch.Generator().manual_seed(7)
    table = torch.randn([100, C_DIM], generator=g)
    return table[batch["image_id"]]


def _rank_losses(batches, D, rank, world, kind="nonsaturating"):
    """(this simulated rank's per-image losses, the D forwards it ran)."""
    calls = []
    hook = D.register_forward_hook(lambda module, args, out: calls.append(module.training))
    try:
        loss = ValRealLoss([fixed_set(VAL_STAT, batches, _c_of, rank, world, "cpu", torch.float32)], D, kind, "cpu",
                           torch.float32)
        return loss.losses(loss.sets[0]), calls
    finally:
        hook.remove()


@pytest.mark.parametrize("kind", ["nonsaturating", "hinge", "rpgan"])
def test_split_over_ranks_each_image_has_the_single_process_loss(tmp_path, kind):
    write_shards(tmp_path, n_samples=24, samples_per_shard=8)
    batches = first_batches(str(tmp_path), 18, 4)  # 5 batches: 4, 4, 4, 4, 2
    cfg = tiny_cfg("model.mbstd_group_size=4")
    _, D = tiny_networks(cfg)
    by_hand = []
    with torch.no_grad():
        for batch in batches:  # D's loss on reals as Dmain computes it, batch by batch
            logits = D(to_float_image(batch["pixels"]), _c_of(batch))[:, 0]
            # rpgan has no loss of a real image alone: -D(x), whose val - train gap ignores D's free offset
            by_hand.append({"nonsaturating": F.softplus(-logits), "hinge": F.relu(1 - logits), "rpgan": -logits}[kind])
    single, calls = _rank_losses(batches, D, 0, 1, kind)
    assert torch.equal(single, torch.cat(by_hand)) and len(calls) == 5
    for world in (2, 3, 7):
        parts = [_rank_losses(batches, D, rank, world, kind) for rank in range(world)]
        # rank r holds batches r, r + world, ...; every rank runs as many forwards as the busiest one
        assert [len(c) for _, c in parts] == [-(-5 // world)] * world
        merged = [by_hand[b] for r in range(world) for b in range(r, 5, world)]
        assert torch.equal(torch.cat([losses for losses, _ in parts]), torch.cat(merged)), world
        assert sum(len(losses) for losses, _ in parts) == 18


def test_report_measures_in_eval_mode_without_gradients_and_puts_the_modes_back(tmp_path):
    write_shards(tmp_path, n_samples=8, samples_per_shard=8)
    batches = first_batches(str(tmp_path), 8, 4)
    _, D = tiny_networks(tiny_cfg())
    D.train()
    D.head.eval()  # a mixed state must come back as it was, module by module
    before = {m: m.training for m in D.modules()}
    weights = {k: v.clone() for k, v in D.state_dict().items()}
    seen = []
    D.register_forward_hook(lambda module, args, out: seen.append((module.training, out.requires_grad)))
    sets = [fixed_set(VAL_STAT, batches, _c_of, 0, 1, "cpu", torch.float32),
            fixed_set(TRAIN_STAT, batches[:1], _c_of, 0, 1, "cpu", torch.float32)]
    collector = StatsCollector()
    ValRealLoss(sets, D, "nonsaturating", "cpu", torch.float32).report(collector)
    assert seen == [(False, False)] * 3
    assert {m: m.training for m in D.modules()} == before
    assert all(torch.equal(v, weights[k]) for k, v in D.state_dict().items())
    summary = collector.tick_summary()
    assert (summary[VAL_STAT]["num"], summary[TRAIN_STAT]["num"], summary["Timing/val_real_sec"]["num"]) == (8, 4, 1)
    with torch.no_grad():
        logits = D(to_float_image(batches[0]["pixels"]), _c_of(batches[0]))
    assert summary[TRAIN_STAT]["mean"] == pytest.approx(float(F.softplus(-logits).mean()), abs=1e-6)


def test_without_val_shards_nothing_is_read_or_reported():
    setup = SimpleNamespace(runtime=SimpleNamespace(device=torch.device("cpu")),  # what from_config reads
                            engines=SimpleNamespace(dtype=torch.float32),
                            objective=SimpleNamespace(kind="nonsaturating"))
    cfg = tiny_cfg()
    assert (cfg.data.val_shards, cfg.data.val_images) == (None, 256)
    off = ValRealLoss.from_config(cfg, setup)
    collector = StatsCollector()
    off.report(collector)
    assert not off.enabled and collector.names() == []


def zero3_worker(rank, world_size, shards_dir):
    """One rank: D on ZeRO-3 with every parameter partitioned, so each D forward gathers collectively."""
    from dist_util import PARTITION_ALL, setup_training, snapshot

    setup, _, _ = setup_training(tiny_cfg("dist.zero_stage_D=3", "schedule.batch_gpu=4", "schedule.batch_size=8"),
                                 ds_overrides=PARTITION_ALL)
    engines, runtime = setup.engines, setup.runtime
    batches = first_batches(shards_dir, 12, 4)  # 3 batches: 2 on rank 0, 1 (and a throw-away forward) on rank 1
    sets = [fixed_set(VAL_STAT, batches, _c_of, rank, world_size, runtime.device, engines.dtype)]
    collector = StatsCollector()
    ValRealLoss(sets, engines.D.module, "nonsaturating", runtime.device, engines.dtype).report(collector)
    summary = collector.tick_summary(reduce_fn=lambda t: runtime.all_reduce_mean(t) * world_size,
                                     all_gather_object_fn=runtime.all_gather_object)
    return summary[VAL_STAT], snapshot(engines)["D"]


@pytest.mark.multiproc
def test_on_zero3_ranks_with_uneven_batches_the_mean_is_the_single_process_one(tmp_path):
    write_shards(tmp_path / "shards", n_samples=16, samples_per_shard=8)
    results = run_ranks(zero3_worker, tmp_path, 2, args=(str(tmp_path / "shards"),), timeout=120)
    (stat, weights), (stat_1, _) = results
    assert stat == stat_1 and stat["num"] == 12  # the ranks agree; every image counted once
    _, D = tiny_networks(tiny_cfg())
    D.load_state_dict(weights)
    with torch.no_grad():
        losses = [F.softplus(-D(to_float_image(b["pixels"]), _c_of(b))) for b in first_batches(str(tmp_path / "shards"), 12, 4)]
    assert stat["mean"] == pytest.approx(float(torch.cat(losses).mean()), abs=1e-6)


# ---------------------------------------------------------------------- a real run on 2 ranks

VAL_IMAGES = 12  # 3 batches of batch_gpu 4 on 2 ranks: rank 1 runs a throw-away forward (ZeRO-3)
# 2 ranks x batch_gpu 4: a tick is 4 iterations, the run 2 ticks; D on ZeRO-3, one thread per rank.
RUN = TINY + ["schedule.kimg_per_tick=0.032", "schedule.total_kimg=0.064", "schedule.image_snapshot_ticks=100",
              "dist.num_threads=1", "dist.zero_stage_D=3", "metrics.metrics=[]"]


@pytest.fixture(scope="module")
def val_shards(tmp_path_factory):
    """Held-out shapes: the same generator as the training shards, another seed."""
    from textgan.data.building.builder import BuildConfig, build

    out = str(tmp_path_factory.mktemp("val") / "shapes16-val")
    build(BuildConfig(source="shapes", out=out, resolution=16, n=32, samples_per_shard=16, workers=1, seed=1,
                      progress=False))
    return out


def _with_val(shards_dir, val_dir):
    return RUN + [f"data.shards={shards_dir}", f"data.val_shards={val_dir}", f"data.val_images={VAL_IMAGES}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shards, val_shards):  # noqa: F811
    run_dir = str(tmp_path_factory.mktemp("uninterrupted") / "run")
    run_ranks(train_worker, tmp_path_factory.mktemp("ranks"), 2, args=(_with_val(shards, val_shards), run_dir, None,
                                                                         None))
    return run_dir


def read_first_samples(shards_dir, n):
    """(images float [n, 3, R, R], captions) of the first n samples, read from the tars here: PIL, the json's
    captions, and the evaluation caption of each image id (the protocol every evaluation follows)."""
    from textgan.data.loading.samples import choose_captions, eval_caption_draws

    with open(os.path.join(shards_dir, "manifest.json")) as f:
        names = [s["name"] for s in json.load(f)["shards"]]
    images, captions = [], []
    for name in names:
        with tarfile.open(os.path.join(shards_dir, name)) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for key in dict.fromkeys(m.split(".", 1)[0] for m in members):  # samples in tar order
                meta = json.loads(tar.extractfile(members[f"{key}.json"]).read())
                jpeg = tar.extractfile(members[f"{key}.jpg"]).read()
                pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
                images.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1)
                captions.append(meta["captions"][choose_captions(len(meta["captions"]),
                                                                 *eval_caption_draws(meta["image_id"]))[0]])
                if len(images) == n:
                    return torch.stack(images), captions
    raise AssertionError(f"{shards_dir} holds fewer than {n} samples")


def loss_by_hand(run_dir, cfg, shards_dir):
    """softplus(-D(x, c)).mean() of the final checkpoint's D over the first VAL_IMAGES samples of shards_dir,
    in batches of batch_gpu (D's minibatch stddev groups within a batch), c from the run's text tower."""
    from textgan.train.checkpoint import load_weights
    from textgan.train.setup import build_networks
    from textgan.train.text import TextConditioner

    text = TextConditioner(cfg.text_encoder, {}, "cpu")
    _, D = build_networks(cfg, text.dim)
    D.load_state_dict(load_weights(os.path.join(run_dir, "checkpoints"))["D"])
    images, captions = read_first_samples(shards_dir, VAL_IMAGES)
    step = cfg.schedule.batch_gpu
    with torch.no_grad():
        logits = torch.cat([D(images[i:i + step], text.encode(captions[i:i + step]))[:, 0]
                            for i in range(0, VAL_IMAGES, step)])
    return float(F.softplus(-logits).mean())


@pytest.mark.slow
@pytest.mark.multiproc
def test_every_tick_reports_both_losses_and_the_last_equals_the_saved_D(uninterrupted, shards,  # noqa: F811
                                                                         val_shards):
    from textgan.config import load_config

    lines = stats_lines(uninterrupted)
    assert [line["Progress/kimg"]["mean"] for line in lines] == [0.032, 0.064]
    for line in lines:
        assert line[VAL_STAT]["num"] == line[TRAIN_STAT]["num"] == VAL_IMAGES  # all images, over both ranks
        assert line["Timing/val_real_sec"]["num"] == 2
    assert lines[0][VAL_STAT]["mean"] != lines[1][VAL_STAT]["mean"]  # D moved between the ticks
    cfg = load_config(DEMO, _with_val(shards, val_shards))
    # The final tick's stats were computed with the D its checkpoint saved (network_snapshot_ticks=1).
    assert lines[-1][VAL_STAT]["mean"] == pytest.approx(loss_by_hand(uninterrupted, cfg, val_shards), abs=1e-5)
    assert lines[-1][TRAIN_STAT]["mean"] == pytest.approx(loss_by_hand(uninterrupted, cfg, shards), abs=1e-5)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(uninterrupted)
    events.Reload()
    assert [e.value for e in events.Scalars(VAL_STAT)] == pytest.approx([line[VAL_STAT]["mean"] for line in lines])


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_run_stopped_mid_tick_and_resumed_reports_the_same_losses(tmp_path, uninterrupted, shards,  # noqa: F811
                                                                    val_shards):
    run_dir = str(tmp_path / "run")
    overrides = _with_val(shards, val_shards)
    # The 6th question comes before iteration 6: tick 2 is cut after its first iteration.
    first = run_ranks(train_worker, tmp_path, 2, args=(overrides, run_dir, None, 6))
    assert all(r.get("stopped") for r in first)
    run_ranks(train_worker, tmp_path, 2, args=(overrides, run_dir, "auto", None))
    expected = [deterministic(line) for line in stats_lines(uninterrupted)]
    got = [deterministic(line) for line in stats_lines(run_dir)]
    assert all(VAL_STAT in line and TRAIN_STAT in line for line in got)
    assert got == expected  # the fixed sets read again after the resume, and the same D: bitwise the same


@pytest.mark.slow
@pytest.mark.multiproc
def test_without_val_shards_the_stats_are_absent_and_training_is_the_same(tmp_path, uninterrupted,
                                                                          shards):  # noqa: F811
    run_dir = str(tmp_path / "run")
    run_ranks(train_worker, tmp_path, 2, args=(RUN + [f"data.shards={shards}"], run_dir, None, None))
    plain = [deterministic(line) for line in stats_lines(run_dir)]
    assert len(plain) == 2 and not any(VAL_STAT in line or TRAIN_STAT in line for line in plain)
    # the measurement reads its own data, draws no random number and leaves D as it was
    measured = [{k: v for k, v in deterministic(line).items() if k not in (VAL_STAT, TRAIN_STAT)}
                for line in stats_lines(uninterrupted)]
    assert measured == plain


# ---------------------------------------------------------------------- refused at submission


@pytest.fixture
def no_sbatch(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def _bad_val_cases(tmp_path, shards_dir):
    no_manifest = tmp_path / "half-built"
    no_manifest.mkdir()
    at_32px = tmp_path / "val32"
    write_shards(at_32px, n_samples=8, samples_per_shard=8, resolution=32)
    small = tmp_path / "val16"
    write_shards(small, n_samples=8, samples_per_shard=8, resolution=16)
    return [
        ([f"data.val_shards={tmp_path / 'missing'}"], ["'data.val_shards'", "no manifest.json", "textgan shards"]),
        ([f"data.val_shards={no_manifest}"], ["'data.val_shards'", "no manifest.json", "leave data.val_shards unset"]),
        ([f"data.val_shards={at_32px}"], ["'data.val_shards'", "built at 32 px", "data.resolution is 16"]),
        ([f"data.val_shards={shards_dir}"], ["'data.val_shards'", "the training shards themselves"]),
        ([f"data.val_shards={small}"], ["'data.val_images' is 256", "holds 8 samples", "data.val_images=8"]),
        ([f"data.val_shards={small}", "data.val_images=0"], ["'data.val_images'", ">= 1"]),
    ]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "submit"])
def test_a_bad_val_shards_exits_2_naming_the_key_and_creates_nothing(tmp_path, capsys, no_sbatch, shards,  # noqa: F811
                                                                      dry_run):
    sets = TINY + [f"data.shards={shards}", "schedule.total_kimg=0.016"]
    for extra, expected in _bad_val_cases(tmp_path, shards):
        argv = ["--config", DEMO, "--outdir", str(tmp_path / "runs")]
        argv += [x for kv in sets + extra for x in ("--set", kv)] + (["--dry-run"] if dry_run else [])
        code, out, err = run_main(submit_launcher, argv, capsys)
        assert code == 2, (extra, out, err)
        assert all(text in err for text in expected), (extra, err)
        assert created(tmp_path / "runs") == [] and not (tmp_path / "missing").exists()
        assert os.listdir(tmp_path / "half-built") == []


def test_good_val_shards_pass_the_checks(tmp_path, capsys, shards):  # noqa: F811
    val = tmp_path / "val16"
    write_shards(val, n_samples=8, samples_per_shard=8, resolution=RESOLUTION)
    sets = TINY + [f"data.shards={shards}", f"data.val_shards={val}", "data.val_images=8"]
    argv = ["--config", DEMO, "--outdir", str(tmp_path / "runs"), "--dry-run"]
    argv += [x for kv in sets for x in ("--set", kv)]
    code, out, err = run_main(submit_launcher, argv, capsys)
    assert code == 0, err
    assert f"val_shards: {val}" in out and "val_images: 8" in out
