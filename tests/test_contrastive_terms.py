"""The research's terms (textgan.losses.contrastive_terms): the weight formula, which features each
term pairs (checked term by term against info_nce on hand-built features), the paired layout of
heterologous image-image pairs, D's heads in D's phase, and that zero weights compute nothing."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from textgan.config import ContrastiveConfig
from textgan.losses.contrastive import info_nce
from textgan.losses.contrastive_terms import ContrastiveTerms, noisy_condition, term_weights
from textgan.nets import ContrastiveHeads


def cfg(**kw):
    return ContrastiveConfig(**kw)


def test_weights_follow_the_research_scheme():
    w = term_weights(cfg(S_D=1, S_clip=2, S_perceptual=1, C_it=2.5, C_ii=3.75, h=0.2))
    assert w == pytest.approx({
        "D_it": 2.5, "D_it_het": 0.5, "D_ii": 3.75, "D_ii_het": 0.75,
        "clip_it": 5.0, "clip_it_het": 1.0, "clip_ii": 7.5, "clip_ii_het": 1.5,
        "perceptual_ii": 3.75, "perceptual_ii_het": 0.75,  # ResNet/VGG: image-image only
    })
    assert set(term_weights(cfg())) == set(w) and not any(term_weights(cfg()).values())


class MeanColour(nn.Module):
    """A stand-in frozen tower with features you can compute by hand: the mean colour."""

    def encode_images(self, x):
        return x.mean(dim=(2, 3))


class MaxColour(nn.Module):
    def encode_images(self, x):
        return x.amax(dim=(2, 3))


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    fakes = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return (fakes, torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g),
            torch.rand(n, 3, 4, 4, generator=g) * 2 - 1, torch.randn(n, 8, generator=g))


def test_every_generator_term_pairs_the_right_features():
    fakes, c, c_het, reals, D_feats = _batch()
    torch.manual_seed(0)
    heads = ContrastiveHeads(8, 3, dim=5, temperature=0.3)
    ids = torch.tensor([4, 5, 6, 7])
    terms = ContrastiveTerms(cfg(C_it=1, C_ii=1, h=0.5, temperature=0.2), clip=MeanColour(), perceptual=MaxColour())
    real = {"D": D_feats.flip(0), "clip": MeanColour().encode_images(reals), "perceptual": MaxColour().encode_images(reals)}
    out = terms.generator_terms(fakes, c, c_het, ids, D_features=D_feats, heads=heads, real=real.__getitem__)
    clip_f, perc_f, d_f = MeanColour().encode_images(fakes), MaxColour().encode_images(fakes), heads.image(D_feats)
    d_real = heads.image(real["D"])

    def nce(x, y, t):
        return info_nce(x, y, t).item()

    def halves(x, target, t):  # paired layout: rows 2, 3 were made from other captions of rows 0, 1's images
        return (nce(x[:2], target[:2], t) + nce(x[2:], target[:2], t)) / 2

    expected = {
        "D_it": nce(d_f, heads.text(c), 0.3), "D_it_het": nce(d_f, heads.text(c_het), 0.3),
        "D_ii": halves(d_f, d_real, 0.3), "D_ii_het": nce(d_f[:2], d_f[2:], 0.3),
        "clip_it": nce(clip_f, c, 0.2), "clip_it_het": nce(clip_f, c_het, 0.2),
        "clip_ii": halves(clip_f, real["clip"], 0.2), "clip_ii_het": nce(clip_f[:2], clip_f[2:], 0.2),
        "perceptual_ii": halves(perc_f, real["perceptual"], 0.2),
        "perceptual_ii_het": nce(perc_f[:2], perc_f[2:], 0.2),
    }
    got = {k.split("/")[-1]: v.item() for k, v in out.items() if k.startswith("Loss/G/contrastive/")}
    assert got == pytest.approx(expected, rel=1e-5)
    weights = term_weights(cfg(C_it=1, C_ii=1, h=0.5))
    assert out["total"].item() == pytest.approx(sum(weights[k] * v for k, v in expected.items()), rel=1e-5)


def test_only_active_terms_run_and_unpaired_ii_uses_all_rows():
    fakes, c, c_het, reals, _ = _batch()
    terms = ContrastiveTerms(cfg(C_ii=2, S_D=0, S_perceptual=0, temperature=0.5), clip=MeanColour())
    assert not terms.paired and not terms.needs_alt_captions and not terms.needs_heads
    assert terms.needs_real("clip") and not terms.needs_real("perceptual")
    real = MeanColour().encode_images(reals)
    out = terms.generator_terms(fakes, c, real=lambda s: {"clip": real}[s])
    assert sorted(out) == ["Loss/G/contrastive/clip_ii", "total"]
    expected = info_nce(MeanColour().encode_images(fakes), real, 0.5).item()
    assert out["total"].item() == pytest.approx(2 * 2 * expected, rel=1e-6)  # S_clip 2 x C_ii 2


def test_positives_by_image_and_asymmetric_reach_info_nce():
    fakes, c, _, _, _ = _batch()
    ids = torch.tensor([1, 1, 2, 3])
    terms = ContrastiveTerms(cfg(C_it=1, S_D=0, positives="image", symmetric=False, temperature=0.5), clip=MeanColour())
    out = terms.generator_terms(fakes, c, ids=ids)
    expected = info_nce(MeanColour().encode_images(fakes), c, 0.5, symmetric=False, ids=ids).item()
    assert out["Loss/G/contrastive/clip_it"].item() == pytest.approx(expected, rel=1e-6)


def test_heads_learn_in_D_phase_from_real_pairs_with_a_learnable_temperature():
    _, c, _, _, D_feats = _batch()
    heads = ContrastiveHeads(8, 3, dim=5, temperature=0.25, learnable_temperature=True)
    terms = ContrastiveTerms(cfg(C_it=2, S_D=1.5, S_clip=0), clip=MeanColour())
    out = terms.discriminator_terms(D_feats, c, heads=heads)
    expected = info_nce(heads.image(D_feats), heads.text(c), 0.25)
    assert out["Loss/D/contrastive/D_it"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["total"].item() == pytest.approx(3.0 * expected.item(), rel=1e-5)
    assert out["Stats/contrastive/temperature_D"].item() == pytest.approx(0.25)
    out["total"].backward()
    assert heads.log_temperature.grad is not None and heads.log_temperature.grad.abs().item() > 0
    assert ContrastiveTerms(cfg(C_ii=1, S_D=1, S_clip=0, S_perceptual=0)).discriminator_terms(D_feats, c, heads=heads) == {}


def test_zero_weights_are_inactive_and_need_nothing():
    terms = ContrastiveTerms(cfg(h=2, S_D=5, temperature=0.01, positives="image", perceptual="resnet18"))
    assert not terms.active and not terms.paired and not terms.needs_heads


def test_missing_tower_is_named():
    with pytest.raises(ValueError, match="perceptual"):
        ContrastiveTerms(cfg(C_ii=1, perceptual="resnet18"), clip=MeanColour())


def test_text_noise_keeps_the_norm_and_moves_the_direction():
    torch.manual_seed(0)
    c = torch.nn.functional.normalize(torch.randn(64, 16), dim=1)
    noisy = noisy_condition(c, 0.3)
    torch.testing.assert_close(noisy.norm(dim=1), torch.ones(64))
    cos = (noisy * c).sum(dim=1)
    # a noise vector of norm 0.3 in a random direction: cosine 1/sqrt(1 + 0.09) on average-ish
    assert 0.9 < cos.mean().item() < 0.99
    assert noisy_condition(c, 0.0) is c


def test_odd_paired_batch_is_refused():
    fakes, c, c_het, reals, _ = _batch(n=3)
    terms = ContrastiveTerms(cfg(C_ii=1, h=1, S_D=0, S_perceptual=0), clip=MeanColour())
    with pytest.raises(ValueError, match="even"):
        terms.generator_terms(fakes, c, c_het, real=lambda s: MeanColour().encode_images(reals))


def test_config_errors_name_the_key():
    from textgan.config import load_config
    from textgan.errors import UsageError

    base = ["data.shards=x", "data.resolution=32"]
    with pytest.raises(UsageError, match="contrastive.perceptual"):
        load_config(None, base + ["contrastive.C_ii=1"])
    with pytest.raises(UsageError, match="batch_gpu must be even"):
        load_config(None, base + ["contrastive.C_ii=1", "contrastive.h=1", "contrastive.S_perceptual=0",
                                  "schedule.batch_gpu=3", "schedule.batch_size=3"])
    with pytest.raises(UsageError, match="contrastive.positives"):
        load_config(None, base + ["contrastive.positives=all"])
    with pytest.raises(UsageError, match="contrastive.temperature"):
        load_config(None, base + ["contrastive.temperature=0"])
    ok = load_config(None, base + ["contrastive.C_it=1", "contrastive.h=0.5"])
    assert SimpleNamespace(**term_weights(ok.contrastive)).clip_it_het == pytest.approx(1.0)
