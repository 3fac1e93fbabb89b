"""model.c_norm (none | center | whiten): ConditionNorm's statistics, where the networks attach it, that their
forward passes use it, the fit on the training captions, and that the buffers travel with checkpoints and
exports (textgan.nets.condition_norm, textgan.train.condition_stats).

The slow test trains one tiny run through the real launcher (submitit local, DeepSpeed on gloo) and exports it.
"""

import math
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from launcher_util import created, run_main, submit_launcher
from test_train_e2e import ROOT, submit
from textgan.data.building.builder import BuildConfig, build as build_shards
from textgan.config import load_config
from textgan.nets import build_networks_from_config
from textgan.nets.condition_norm import MODES, WHITEN_EPS, ConditionNorm, condition_norms
from textgan.train import condition_stats
from textgan.train.condition_stats import FIT_CAPTIONS, fit_condition_norms

DEMO = os.path.join(ROOT, "configs", "demo.yaml")
TINY_MODEL = ["data.shards=x", "data.resolution=16", "model.channel_base=512", "model.channel_max=32",
              "model.z_dim=16", "model.w_dim=16", "model.mapping_layers=1"]
ARCH = {"stylegan2": ["model.arch=stylegan2"], "cgan": ["model.arch=cgan"]}
C_DIM = 24
NORM_STATE = ("mean", "transform", "fitted")


def tiny_config(arch, c_norm):
    return load_config(DEMO, TINY_MODEL + ARCH[arch] + [f"model.c_norm={c_norm}"])


def build(arch, c_norm, seed=0):
    torch.manual_seed(seed)
    return build_networks_from_config(tiny_config(arch, c_norm), C_DIM)


def g_norm_owner(G, arch):
    """The module whose c_norm G's forward applies: the mapping network (stylegan2), the generator (cgan)."""
    return G.mapping if arch == "stylegan2" else G


def captions_like(n, dim, seed=0, offset=0.7):
    """[n, dim] float32 samples with a large common component (as L2-normalised CLIP embeddings have)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) * 0.1 + offset * torch.randn(dim, generator=g).sign() / math.sqrt(dim)


# ---------------------------------------------------------------------- ConditionNorm


def test_center_subtracts_the_samples_mean_and_nothing_else():
    samples = captions_like(500, 8) * torch.linspace(0.5, 3, 8)
    norm = ConditionNorm(8, "center")
    assert not bool(norm.fitted)
    norm.fit(samples)
    assert bool(norm.fitted) and norm.fitted.dtype == torch.bool
    mean = samples.double().mean(dim=0)
    assert mean.abs().min() > 0.05  # a mean that is not ~0: subtracting it is visible
    assert (norm.mean.double() - mean).abs().max() < 1e-6
    assert torch.equal(norm.transform, torch.eye(8))
    c = captions_like(5, 8, seed=1)
    assert (norm(c).double() - (c.double() - mean)).abs().max() < 1e-6


def test_whiten_gives_zero_mean_and_identity_covariance_up_to_the_eps_floor():
    g = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    mixing = (rotation * torch.tensor([2.0, 1.5, 1.0, 0.7, 0.5, 0.4], dtype=torch.float64)).float()
    samples = torch.randn(4000, 6, generator=g) @ mixing.T + torch.tensor([0.5, -1.0, 2.0, 0.0, 0.3, -0.2])
    norm = ConditionNorm(6, "whiten")
    norm.fit(samples)
    assert bool(norm.fitted)
    x = samples.double()
    lam = torch.linalg.eigvalsh(torch.cov(x.T))  # the samples' covariance spectrum
    assert lam.min() > 0.1  # full rank
    assert (norm.mean.double() - x.mean(dim=0)).abs().max() < 1e-6
    assert torch.allclose(norm.transform, norm.transform.T, atol=1e-6)  # ZCA: symmetric, no rotation

    y = norm(samples).double()
    cov = torch.cov(y.T)
    assert y.mean(dim=0).abs().max() < 1e-5
    # Each direction's variance becomes lambda / (lambda + eps lambda_max): 1 up to the eps floor.
    expected = lam / (lam + WHITEN_EPS * lam.max())
    assert torch.allclose(torch.linalg.eigvalsh(cov), expected, atol=1e-5)
    worst = WHITEN_EPS * lam.max() / lam.min()  # ~ 0.025 here
    assert (cov - torch.eye(6, dtype=torch.float64)).abs().max() <= worst + 1e-5
    assert (cov - torch.eye(6, dtype=torch.float64)).abs().max() < 0.03


def test_whiten_on_rank_deficient_samples_stays_finite_and_bounded():
    # 3-dimensional data embedded in 16 dimensions: 13 directions the samples never use.
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    used, unused = basis[:, :3], basis[:, 3:]
    offset = torch.randn(16, generator=g, dtype=torch.float64)
    coords = torch.randn(2000, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    samples = (coords @ used.T + offset).float()
    norm = ConditionNorm(16, "whiten")
    norm.fit(samples)
    transform = norm.transform.double()
    assert bool(norm.fitted) and torch.isfinite(norm.transform).all() and torch.isfinite(norm.mean).all()

    lam_max = torch.linalg.eigvalsh(torch.cov(samples.double().T)).max()
    bound = 1 / math.sqrt(WHITEN_EPS * lam_max)
    gains = (unused.T @ transform).norm(dim=1)  # how much each unused direction is scaled
    assert gains.max() <= bound * (1 + 1e-3)
    assert gains.min() >= bound * (1 - 1e-2)  # the floor, not more and not much less
    assert torch.linalg.matrix_norm(transform, ord=2) <= bound * (1 + 1e-3)
    # The used directions are whitened: their covariance is ~ identity (up to the eps floor).
    lam_used = torch.linalg.eigvalsh(torch.cov((samples.double() @ used).T))  # 9, 1, 0.25 (about)
    y = norm(samples).double() @ used
    worst = WHITEN_EPS * lam_max / lam_used.min()  # ~ 0.036
    assert (torch.cov(y.T) - torch.eye(3, dtype=torch.float64)).abs().max() <= worst + 1e-5
    # A condition off the samples' subspace stays finite and bounded.
    c = torch.randn(4, 16, generator=g)
    out = norm(c)
    assert torch.isfinite(out).all()
    assert (out.double().norm(dim=1) <= (c.double() - norm.mean.double()).norm(dim=1) * bound * (1 + 1e-3)).all()


@pytest.mark.parametrize("samples", [
    torch.full((5, 4), 0.1),  # one caption five times (its float64 mean is not exactly 0.1)
    torch.randn(1, 4, generator=torch.Generator().manual_seed(0)),  # a single sample
    torch.zeros(3, 4),
], ids=["identical", "single", "zeros"])
def test_whiten_on_a_single_point_only_centres(samples):
    norm = ConditionNorm(4, "whiten")
    norm.fit(samples)
    assert bool(norm.fitted) and torch.isfinite(norm.transform).all()
    assert torch.equal(norm.transform, torch.eye(4))
    c = torch.randn(3, 4)
    assert torch.allclose(norm(c), c - samples.double().mean(dim=0).float(), atol=1e-7)


def test_refitting_replaces_the_statistics():
    norm = ConditionNorm(4, "whiten")
    norm.fit(captions_like(200, 4, seed=0))
    norm.fit(torch.ones(3, 4))  # now a single point: the earlier transform must not survive
    assert torch.equal(norm.mean, torch.ones(4)) and torch.equal(norm.transform, torch.eye(4))


@pytest.mark.parametrize("mode", ["none", "bogus", "Whiten"])
def test_a_mode_that_is_not_a_normalisation_is_refused_naming_the_modes(mode):
    with pytest.raises(ValueError, match=r"center.*whiten") as info:
        ConditionNorm(8, mode)
    assert repr(mode) in str(info.value)
    assert MODES == ("none", "center", "whiten")


# ---------------------------------------------------------------------- where the networks attach it


@pytest.mark.parametrize("arch", ["stylegan2", "cgan"])
def test_none_builds_the_old_networks_and_whiten_adds_only_the_norm_buffers(arch):
    G0, D0 = build(arch, "none")
    rng_after_none = torch.randn(4)
    G1, D1 = build(arch, "whiten")
    rng_after_whiten = torch.randn(4)
    assert torch.equal(rng_after_none, rng_after_whiten)  # attaching the norm draws no random numbers

    prefix_G = "mapping.c_norm." if arch == "stylegan2" else "c_norm."
    for net0, net1, prefix in ((G0, G1, prefix_G), (D0, D1, "head.c_norm.")):
        s0, s1 = net0.state_dict(), net1.state_dict()
        assert not [k for k in s0 if "c_norm" in k]  # old checkpoints (no c_norm) load strictly
        assert set(s1) - set(s0) == {prefix + name for name in NORM_STATE}
        assert set(s0) <= set(s1)
        differ = [k for k, v in s0.items() if not torch.equal(v, s1[k])]
        assert differ == []  # the same weights: the norm is attached after they are drawn
        net0.load_state_dict(s0, strict=True)
    assert isinstance(g_norm_owner(G0, arch).c_norm, nn.Identity) and isinstance(D0.head.c_norm, nn.Identity)
    assert condition_norms(G0, D0) == []

    norms = condition_norms(G1, D1)
    assert norms == [g_norm_owner(G1, arch).c_norm, D1.head.c_norm]
    assert all(isinstance(n, ConditionNorm) and n.mode == "whiten" and not bool(n.fitted) for n in norms)
    # the buffers are what the state dicts hold
    assert G1.state_dict()[prefix_G + "transform"].data_ptr() == norms[0].transform.data_ptr()
    assert D1.state_dict()["head.c_norm.mean"].data_ptr() == norms[1].mean.data_ptr()


@pytest.mark.parametrize("arch", ["stylegan2", "cgan"])
def test_center_attaches_center_norms(arch):
    G, D = build(arch, "center")
    assert [n.mode for n in condition_norms(G, D)] == ["center", "center"]
    assert g_norm_owner(G, arch).c_norm is condition_norms(G)[0]


# ---------------------------------------------------------------------- the forward passes use it


@pytest.fixture
def one_thread():
    """Tiny convolutions on a shared 2-core machine: ~100x faster on one thread than on two busy ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fitted_networks(arch, mode):
    G, D = build(arch, mode)
    samples = captions_like(300, C_DIM, seed=2)
    for norm in condition_norms(G, D):
        norm.fit(samples)
    assert norm.mean.abs().max() > 0.05  # a nonzero mean
    return G.eval(), D.eval(), norm


def apply_by_hand(norm, c):
    x = c - norm.mean
    return x @ norm.transform if norm.mode == "whiten" else x


@pytest.mark.parametrize("mode", ["center", "whiten"])
@pytest.mark.parametrize("arch", ["stylegan2", "cgan"])
def test_G_and_D_see_the_normalised_condition(arch, mode, one_thread):
    G, D, norm = fitted_networks(arch, mode)
    g = torch.Generator().manual_seed(3)
    z, c = torch.randn(4, G.z_dim, generator=g), captions_like(4, C_DIM, seed=4)
    img = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        fake, logits = G(z, c, noise_mode="const"), D(img, c)
        g_norm, d_norm = g_norm_owner(G, arch).c_norm, D.head.c_norm
        g_norm_owner(G, arch).c_norm, D.head.c_norm = nn.Identity(), nn.Identity()
        fake_by_hand = G(z, apply_by_hand(g_norm, c), noise_mode="const")
        logits_by_hand = D(img, apply_by_hand(d_norm, c))
        fake_raw, logits_raw = G(z, c, noise_mode="const"), D(img, c)
    torch.testing.assert_close(fake, fake_by_hand, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, logits_by_hand, rtol=0, atol=1e-6)
    # ... and it matters: without the norm the same networks give other outputs
    assert (fake - fake_raw).abs().max() > 1e-3
    assert (logits - logits_raw).abs().max() > 1e-4


# ---------------------------------------------------------------------- fitting on the training captions


def fake_training_captions(monkeypatch, total, c_dim, seed=5):
    """eval_loader replaced by `total` captions "0", "1", ... in batches, and a text conditioner that embeds
    caption i as row i of a fixed table: what fit_condition_norms reads, without shards or a tower."""
    table = captions_like(total, c_dim, seed=seed)
    calls = SimpleNamespace(shards=[], batches=0)  # the loaders made, the batches read

    def loader(shards_dir, batch_size, num_workers=2, **kwargs):
        calls.shards.append(shards_dir)
        for start in range(0, total, batch_size):
            calls.batches += 1
            yield {"caption": [str(i) for i in range(start, min(total, start + batch_size))]}

    monkeypatch.setattr(condition_stats, "eval_loader", loader)
    return table, (lambda batch: table[[int(x) for x in batch["caption"]]]), calls


RUNTIME = SimpleNamespace(is_main=True, device=torch.device("cpu"), broadcast_=lambda t, src=0: t)


def test_fit_uses_the_first_FIT_CAPTIONS_captions_in_file_order(monkeypatch):
    table, text, calls = fake_training_captions(monkeypatch, FIT_CAPTIONS + 300, C_DIM)
    G, D = build("stylegan2", "whiten")
    cfg = tiny_config("stylegan2", "whiten")
    assert fit_condition_norms(cfg, RUNTIME, (G, D), text) == 2
    assert calls.shards == ["x"] and calls.batches == FIT_CAPTIONS // condition_stats.BATCH  # x: cfg.data.shards
    first = table[:FIT_CAPTIONS].double()
    reference = ConditionNorm(C_DIM, "whiten")
    reference.fit(table[:FIT_CAPTIONS])
    for norm in condition_norms(G, D):
        assert bool(norm.fitted)
        assert (norm.mean.double() - first.mean(dim=0)).abs().max() < 1e-6
        assert torch.equal(norm.transform, reference.transform)
    # all of them would give another mean
    assert (G.mapping.c_norm.mean.double() - table.double().mean(dim=0)).abs().max() > 1e-4


def test_caption_embeddings_stop_at_the_limit_within_a_batch(monkeypatch):
    table, text, calls = fake_training_captions(monkeypatch, 1000, C_DIM)
    got = condition_stats.caption_embeddings("x", text, limit=300)  # 300: inside the second batch of 256
    assert torch.equal(got, table[:300])
    assert calls.batches == 2  # and no more is read
    assert torch.equal(condition_stats.caption_embeddings("x", text, limit=5000), table)


def test_shards_with_no_readable_sample_are_named_with_their_config_key(monkeypatch):
    _, text, _ = fake_training_captions(monkeypatch, 0, C_DIM)  # every shard skipped: the loader yields nothing
    with pytest.raises(FileNotFoundError, match=r"^no readable sample in data.shards=gone to fit model.c_norm on: "
                                                r"every shard is missing or damaged"):
        condition_stats.caption_embeddings("gone", text)


def test_fit_takes_every_sample_of_a_smaller_set_and_skips_fitted_norms(monkeypatch):
    table, text, calls = fake_training_captions(monkeypatch, 300, C_DIM)
    G, D = build("cgan", "center")
    D.head.c_norm.fit(torch.ones(2, C_DIM))  # as --init-from loads it: kept
    assert fit_condition_norms(tiny_config("cgan", "center"), RUNTIME, (G, D), text) == 1
    assert (G.c_norm.mean.double() - table.double().mean(dim=0)).abs().max() < 1e-6
    assert torch.equal(D.head.c_norm.mean, torch.ones(C_DIM))
    # all fitted: nothing is read
    assert fit_condition_norms(tiny_config("cgan", "center"), RUNTIME, (G, D), text) == 0
    assert len(calls.shards) == 1


def test_fit_without_a_text_conditioner_is_refused_and_none_needs_none(monkeypatch):
    fake_training_captions(monkeypatch, 10, C_DIM)
    G, D = build("stylegan2", "whiten")
    with pytest.raises(ValueError, match="text conditioner"):
        fit_condition_norms(tiny_config("stylegan2", "whiten"), RUNTIME, (G, D), None)
    G, D = build("stylegan2", "none")
    assert fit_condition_norms(tiny_config("stylegan2", "none"), RUNTIME, (G, D), None) == 0


# ---------------------------------------------------------------------- the config


@pytest.fixture
def no_sbatch(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "submit"])
@pytest.mark.parametrize("override, expected", [
    ("model.c_norm=bogus", ["'model.c_norm'", "none, center, whiten"]),
    ("model.mapping_lr_mul=0", ["'model.mapping_lr_mul'", "> 0"]),
], ids=["c_norm", "mapping_lr_mul"])
def test_bad_c_norm_settings_exit_2_naming_the_key(tmp_path, capsys, no_sbatch, override, expected, dry_run):
    demo_shards = tmp_path / "shapes32"  # missing: the demo would build them on first use
    argv = ["--config", DEMO, "--outdir", str(tmp_path / "runs"), "--set", f"data.shards={demo_shards}",
            "--set", override]
    code, out, err = run_main(submit_launcher, argv + (["--dry-run"] if dry_run else []), capsys)
    assert code == 2, (out, err)
    assert all(text in err for text in expected), err
    assert created(tmp_path / "runs") == [] and not demo_shards.exists()


def test_every_c_norm_value_loads():
    for mode in MODES:
        assert load_config(DEMO, TINY_MODEL + [f"model.c_norm={mode}"]).model.c_norm == mode
    assert load_config(DEMO, TINY_MODEL).model.c_norm == "whiten"  # the demo recipe's choice (BENCHMARKS.md)
    coco = load_config(os.path.join(ROOT, "configs", "coco64.yaml"), ["data.shards=x"])
    assert coco.model.c_norm == "none"  # the default, until configs/sweeps/conditioning.yaml has been run
    assert load_config(DEMO, TINY_MODEL + ["model.mapping_lr_mul=0.05"]).model.mapping_lr_mul == 0.05


# ---------------------------------------------------------------------- end to end: training, checkpoint, export

# c_norm's resume (the buffers come back from the checkpoint) is not run here: a second launcher run adds ~35-40 s
# on 2 cores, and the refit on resume gives the same values as the saved ones, so it could not tell them apart.


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """128 captioned shapes at 16 px in 4 shards (tests/test_train_e2e.py's)."""
    out = str(tmp_path_factory.mktemp("shards") / "shapes16")
    build_shards(BuildConfig(source="shapes", out=out, resolution=16, n=128, samples_per_shard=32, workers=1,
                             progress=False))
    return out


@pytest.fixture(scope="module")
def whiten_run(tmp_path_factory, shards):
    outdir = tmp_path_factory.mktemp("runs")
    proc = submit("--set", "model.c_norm=whiten", outdir=outdir, shards=shards, total_kimg=0.016)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return outdir / "00000-demo"


def training_captions(shards_dir):
    """The shards' captions in file order (the one each sample's evaluation picks), read independently of
    textgan.train.condition_stats: another batch size, another grouping in the text tower."""
    from textgan.data.loading.loader import eval_loader

    return [caption for batch in eval_loader(shards_dir, 48, num_workers=0) for caption in batch["caption"]]


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_whiten_run_saves_the_caption_statistics_and_its_export_generates_with_them(whiten_run, shards, tmp_path):
    from textgan import cli
    from textgan.infer import generate, latent, load_model
    from textgan.train.checkpoint import load_weights
    from textgan.train.text import embed_texts, load_text_tower

    cfg = load_config(str(whiten_run / "config.yaml"))
    assert cfg.model.c_norm == "whiten"
    weights = load_weights(str(whiten_run / "checkpoints"))
    states = {"G": weights["G"], "G_ema": weights["G_ema"], "D": weights["D"]}
    prefixes = {"G": "mapping.c_norm.", "G_ema": "mapping.c_norm.", "D": "head.c_norm."}
    buffers = {net: {name: states[net][prefixes[net] + name] for name in NORM_STATE} for net in states}
    for net in ("G_ema", "D"):
        for name in NORM_STATE:
            assert torch.equal(buffers[net][name], buffers["G"][name]), (net, name)
    assert bool(buffers["G"]["fitted"])

    # (a) the statistics are those of the first N training captions, embedded by the run's text tower
    captions = training_captions(shards)
    n = min(FIT_CAPTIONS, len(captions))
    assert n == len(captions) == 128
    tower = load_text_tower(cfg.text_encoder, "cpu")
    embeddings = torch.cat([embed_texts(tower, captions[i:i + 48]) for i in range(0, n, 48)])
    mean = embeddings.double().mean(dim=0)
    assert mean.norm() > 0.3  # the common component the norm removes
    assert (buffers["G"]["mean"].double() - mean).abs().max() < 1e-5
    reference = ConditionNorm(embeddings.shape[1], "whiten")
    reference.fit(embeddings)
    transform = buffers["G"]["transform"]
    assert (transform - reference.transform).abs().max() <= 1e-4 * transform.abs().max()

    # (b) the export, loaded as `textgan generate` loads it, generates with G_ema's statistics
    out = tmp_path / "G.pt"
    assert cli.main(["export", str(whiten_run), "--out", str(out)]) == 0
    model = load_model(str(out), device="cpu")
    assert model.kind == "export"
    exported = model.G.mapping.c_norm
    assert isinstance(exported, ConditionNorm) and exported.mode == "whiten"
    for name in NORM_STATE:
        assert torch.equal(getattr(exported, name), buffers["G_ema"][name]), name

    prompt, seed = captions[0], 7
    (sample,) = generate(model, [prompt], [seed], output="float")
    G_ema, _ = build_networks_from_config(cfg, embeddings.shape[1])
    G_ema.load_state_dict(weights["G_ema"])
    G_ema.eval()
    with torch.no_grad():
        c = embed_texts(tower, [prompt])
        expected = G_ema(latent(seed, G_ema.z_dim), c, noise_mode="const")[0]
        G_ema.mapping.c_norm = nn.Identity()
        without_norm = G_ema(latent(seed, G_ema.z_dim), c, noise_mode="const")[0]
    torch.testing.assert_close(sample.image, expected, rtol=0, atol=1e-6)
    assert (sample.image - without_norm).abs().max() > 1e-4  # the norm shapes these images
