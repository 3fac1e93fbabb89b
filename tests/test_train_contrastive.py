"""Contrastive training end to end: zero weights are bitwise the base model, every term trains
(ZeRO-2 and ZeRO-3), and real-image features read from the shards equal the on-the-fly ones.

Real components: shapes shards with precomputed CLIP/ResNet features made by the shard builder,
the launcher with submitit's local executor, DeepSpeed engines on gloo. Tiny nets, a few steps.
"""

import math
import os

import open_clip
import pytest
import torch
from test_train_e2e import ROOT, TINY, deterministic, stats_lines
from tiny_models import tiny_resnet_weights

import textgan.encoders  # noqa: F401  (registers textgan-demo-clip with open_clip)
from textgan.data.building.cli import main as build_main
from textgan.data.decode import to_float_image
from textgan.data.loading.loader import train_loader
from textgan.data.manifest import load_manifest
from textgan.errors import UsageError

ALL_TERMS = ["contrastive.C_it=1", "contrastive.C_ii=1", "contrastive.h=0.5", "contrastive.S_perceptual=1",
             "contrastive.perceptual=resnet18",
             "contrastive.learnable_temperature=true", "contrastive.positives=image"]
TERM_NAMES = ["D_it", "D_it_het", "D_ii", "D_ii_het", "clip_it", "clip_it_het", "clip_ii", "clip_ii_het",
              "perceptual_ii", "perceptual_ii_het"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    with torch.random.fork_rng():
        torch.manual_seed(7)
        clip = open_clip.create_model("textgan-demo-clip", pretrained=None)
    clip_file = str(d / "demo_clip.pt")
    torch.save(clip.state_dict(), clip_file)
    return {"clip": clip_file, "resnet": tiny_resnet_weights(d)}


@pytest.fixture(scope="module")
def shards(tmp_path_factory, weights):
    """16 px shapes with precomputed features of the run's CLIP and ResNet (files, so they match)."""
    out = str(tmp_path_factory.mktemp("shards") / "shapes16")
    code = build_main(["shapes", "--outdir", out, "--n", "64", "--resolution", "16", "--samples-per-shard", "16",
                       "--workers", "1", "--clip-model", "textgan-demo-clip", "--clip-pretrained", weights["clip"],
                       "--perceptual", "resnet18", "--perceptual-weights", weights["resnet"]])
    assert code == 0
    return out


def run(tmp_path, shards, weights, *overrides, total_kimg=0.024, ranks=1):
    import subprocess
    import sys

    # The demo recipe has contrastive terms on: start from none, then add the test's own.
    sets = TINY + ["contrastive.C_it=0", "contrastive.C_ii=0",
                   f"data.shards={shards}", f"schedule.total_kimg={total_kimg}", "schedule.kimg_per_tick=0.008",
                   "text_encoder.random_weights=false", f"text_encoder.pretrained={weights['clip']}",
                   f"contrastive.perceptual_weights={weights['resnet']}", *overrides]
    cmd = [sys.executable, os.path.join(ROOT, "launchers", "submit.py"), "--local", "--config",
           os.path.join(ROOT, "configs", "demo.yaml"), "--outdir", str(tmp_path), "--tasks-per-node", str(ranks)]
    for kv in sets:
        cmd += ["--set", kv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return os.path.join(str(tmp_path), "00000-demo")


@pytest.mark.slow
@pytest.mark.multiproc
def test_zero_weights_are_exactly_the_base_model(tmp_path, shards, weights):
    base = stats_lines(run(tmp_path / "base", shards, weights))
    # Every other contrastive knob moved; with C_it = C_ii = 0 nothing may change, and the ResNet
    # named here is never loaded (its weights path points nowhere).
    knobs = stats_lines(run(tmp_path / "knobs", shards, weights, "contrastive.h=2", "contrastive.S_D=3",
                            "contrastive.temperature=0.01", "contrastive.symmetric=false",
                            "contrastive.positives=image", "contrastive.learnable_temperature=true",
                            "contrastive.perceptual=resnet18", "contrastive.perceptual_weights=/nonexistent.pt",
                            "contrastive.precomputed=require"))
    assert len(base) == 3
    assert [deterministic(x) for x in knobs] == [deterministic(x) for x in base]
    assert not any("contrastive" in key for line in knobs for key in line)


@pytest.mark.slow
@pytest.mark.multiproc
@pytest.mark.parametrize("stage", [2, 3])
def test_every_term_trains_with_precomputed_features(tmp_path, shards, weights, stage):
    run_dir = run(tmp_path, shards, weights, *ALL_TERMS, "contrastive.precomputed=require",
                  f"dist.zero_stage_G={stage}", f"dist.zero_stage_D={stage}")
    lines = stats_lines(run_dir)
    assert len(lines) == 3
    for line in lines:
        for name in TERM_NAMES:
            value = line[f"Loss/G/contrastive/{name}"]["mean"]
            assert math.isfinite(value) and value > 0, name
        assert math.isfinite(line["Loss/D/contrastive/D_it"]["mean"])
    # batch_gpu 4 in the tiny config: it terms over 4 rows (positives by image), ii terms over halves of 2;
    # at the start every InfoNCE sits near log(rows): the losses are computed over the right batch.
    first = lines[0]
    assert first["Loss/G/contrastive/perceptual_ii_het"]["mean"] == pytest.approx(math.log(2), abs=0.3)
    temperature = [line["Stats/contrastive/temperature_D"]["mean"] for line in lines]
    assert temperature[-1] != temperature[0]  # learnable: D's optimizer moves it
    with open(os.path.join(run_dir, "config.yaml")) as f:
        assert "C_ii: 1.0" in f.read()


@pytest.mark.slow
@pytest.mark.multiproc
def test_every_term_on_two_ranks_with_negatives_from_both(tmp_path, shards, weights):
    # batch 8 = 4 per rank x 2 ranks: each rank's InfoNCE sees all 8 rows, so at the start the
    # image-text terms sit near log(8) rather than the log(4) one rank alone would give.
    run_dir = run(tmp_path, shards, weights, "contrastive.C_it=1", "contrastive.C_ii=1", "contrastive.h=0.5",
                  "contrastive.S_perceptual=0", ranks=2, total_kimg=0.016)
    lines = stats_lines(run_dir)
    assert len(lines) == 2
    first = lines[0]
    assert first["Loss/G/contrastive/clip_it"]["num"] == 2 * 1  # 2 ranks x 1 iteration
    assert first["Loss/G/contrastive/clip_it"]["mean"] == pytest.approx(math.log(8), abs=0.35)
    assert first["Loss/G/contrastive/clip_ii_het"]["mean"] == pytest.approx(math.log(4), abs=0.35)
    assert math.isfinite(first["Loss/D/contrastive/D_it"]["mean"])


def _batch_and_source(shards, weights, precomputed, *overrides):
    from textgan.config import load_config
    from textgan.runtime import Runtime
    from textgan.train.contrastive_setup import build_contrastive
    from textgan.train.text import TextConditioner

    cfg = load_config(os.path.join(ROOT, "configs", "demo.yaml"), TINY + ["contrastive.C_it=0", "contrastive.C_ii=0",
        f"data.shards={shards}", "text_encoder.random_weights=false", f"text_encoder.pretrained={weights['clip']}",
        f"contrastive.perceptual_weights={weights['resnet']}", *ALL_TERMS, f"contrastive.precomputed={precomputed}", *overrides])
    manifest = load_manifest(shards)
    runtime = Runtime.from_env(env={})
    text = TextConditioner(cfg.text_encoder, manifest, runtime.device)
    terms, source = build_contrastive(cfg, text, manifest, runtime)
    batch = next(iter(train_loader(shards, 8, rank=0, world_size=1, seed=0, num_workers=0)))
    return terms, source, batch


def test_precomputed_real_features_equal_on_the_fly_ones(shards, weights):
    _, source, batch = _batch_and_source(shards, weights, "auto")
    assert source.precomputed == {"clip", "perceptual"}
    for structure in ("clip", "perceptual"):
        reals = to_float_image(batch["pixels"])
        stored = source.features(structure, batch, reals)
        fresh = source.towers[structure].encode_images(reals).detach()
        # stored as float16: equal within its precision
        torch.testing.assert_close(stored, fresh, rtol=2e-3, atol=2e-3 * fresh.abs().max().item())
    _, off, _ = _batch_and_source(shards, weights, "never")
    assert off.precomputed == set()


def test_features_from_another_model_are_refused_or_recomputed(tmp_path, shards, weights):
    other = tiny_resnet_weights(tmp_path)
    state = torch.load(other, weights_only=True)
    state["fc.bias"] += 1
    torch.save(state, other)
    renamed = dict(weights, resnet=other)
    _, source, _ = _batch_and_source(shards, renamed, "auto")
    assert source.precomputed == {"clip"}  # the ResNet differs: its features are computed on the fly
    with pytest.raises(UsageError, match="precomputed perceptual features in the shards were made with"):
        _batch_and_source(shards, renamed, "require")



def test_perceptual_input_size_reads_features_made_at_that_size_only(tmp_path, shards, weights):
    """Shards built with --perceptual-size 64 serve a run with contrastive.perceptual_size=64 (equal to its own
    features at that size); a run at the default 224 px computes them itself, or with require refuses, naming
    both sizes."""
    small = str(tmp_path / "shapes16-p64")
    assert build_main(["shapes", "--outdir", small, "--n", "16", "--resolution", "16", "--samples-per-shard", "16",
                       "--workers", "1", "--perceptual", "resnet18", "--perceptual-weights", weights["resnet"],
                       "--perceptual-size", "64"]) == 0
    assert load_manifest(small)["settings"]["features"]["perceptual"]["input_size"] == 64
    _, source, batch = _batch_and_source(small, weights, "auto", "contrastive.perceptual_size=64")
    assert source.precomputed == {"perceptual"} and source.towers["perceptual"].input_size == 64
    reals = to_float_image(batch["pixels"])
    fresh = source.towers["perceptual"].encode_images(reals).detach()
    torch.testing.assert_close(source.features("perceptual", batch, reals), fresh, rtol=2e-3,
                               atol=2e-3 * fresh.abs().max().item())
    _, default_size, _ = _batch_and_source(small, weights, "auto")
    assert "perceptual" not in default_size.precomputed
    with pytest.raises(UsageError, match=r"made with perceptual model 'resnet18' at 64 px.*'resnet18' at 224 px"):
        _batch_and_source(small, weights, "require")


@pytest.mark.parametrize("args, message", [
    (["--perceptual-size", "112"], "need --perceptual ARCH"),
    (["--perceptual", "resnet18", "--perceptual-random-weights", "--perceptual-size", "16"], "perceptual input size"),
])
def test_builder_perceptual_size_errors(tmp_path, capsys, args, message):
    code = build_main(["shapes", "--outdir", str(tmp_path / "out"), "--n", "4", "--resolution", "16", *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out" / "manifest.json")


def test_config_refuses_a_perceptual_size_below_32():
    from textgan.config import load_config

    with pytest.raises(UsageError, match=r"contrastive.perceptual_size.*>= 32"):
        load_config(os.path.join(ROOT, "configs", "demo.yaml"), ["contrastive.perceptual_size=16"])
