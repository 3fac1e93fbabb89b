"""textgan.losses.objective.GANObjective: totals, which networks get gradients, what D sees."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from textgan.augment import AugmentPipe
from textgan.config import LossConfig
from textgan.losses import GANObjective, d_loss_fake, d_loss_real, g_loss, l2_penalty, orthogonal_penalty
from textgan.losses.regularizers import path_length_penalty
from textgan.nets import build_networks

Z, C, NUM_WS, W_DIM, RES = 4, 3, 2, 5, 4


class TinyG(nn.Module):
    """z, c -> ws [N, 2, 5] -> img [N, 3, 4, 4]; out_bias does not depend on ws (so only the `* 0`
    trick puts it in Greg's graph)."""

    def __init__(self):
        super().__init__()
        self.mapping = nn.Linear(Z + C, NUM_WS * W_DIM)
        self.synthesis = nn.Linear(NUM_WS * W_DIM, 3 * RES * RES, bias=False)
        self.out_bias = nn.Parameter(torch.zeros(3, 1, 1))

    def forward(self, z, c):
        ws = self.mapping(torch.cat([z, c], 1)).reshape(-1, NUM_WS, W_DIM)
        return self.synthesis(ws.flatten(1)).reshape(-1, 3, RES, RES) + self.out_bias, ws


class TinyD(nn.Module):
    """logits = <a, img> + <b, c> + bias: R1 is ||a||^2 for every sample."""

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(3 * RES * RES, 1, bias=False)
        self.text = nn.Linear(C, 1)

    def forward(self, img, c):
        return self.image(img.flatten(1)) + self.text(c)  # [N, 1]


class Spy:
    """The real D_fn, recording what it was called with."""

    def __init__(self, D):
        self.D, self.calls = D, []

    def __call__(self, img, c):
        self.calls.append((img.detach().clone(), c.detach().clone()))
        return self.D(img, c)


def setup(seed=0, n=4, **loss):
    torch.manual_seed(seed)
    G, D = TinyG(), TinyD()
    cfg = dataclasses.replace(LossConfig(), **loss)
    z, c, reals = torch.randn(n, Z), torch.randn(n, C), torch.randn(n, 3, RES, RES)
    return G, D, cfg, z, c, reals


def constant_D(bias):
    D = TinyD()
    with torch.no_grad():
        for p in D.parameters():
            p.zero_()
        D.text.bias.fill_(bias)
    return D


SP_HALF, SP_MHALF = math.log(1 + math.exp(0.5)), math.log(1 + math.exp(-0.5))  # 0.974077, 0.474077


# ------------------------------------------------------------------ Dmain


def test_d_main_hand_computed_with_a_constant_d():
    G, _, cfg, z, c, reals = setup(matching_aware=0.5)
    out = GANObjective(cfg).D_main(G, constant_D(0.5), reals, c, z)  # every logit is 0.5
    assert out["Loss/D/adv_fake"].item() == pytest.approx(SP_HALF)  # softplus(0.5)
    assert out["Loss/D/adv_real"].item() == pytest.approx(SP_MHALF)  # softplus(-0.5)
    assert out["Loss/D/matching"].item() == pytest.approx(SP_HALF)  # a mismatched real counts as fake
    assert out["total"].item() == pytest.approx(SP_HALF + SP_MHALF + 0.5 * SP_HALF)
    assert out["Stats/D/real_sign"].item() == 1.0
    assert out["Stats/D/logits_real"].item() == pytest.approx(0.5)


def test_d_main_hinge():
    G, _, cfg, z, c, reals = setup(kind="hinge")
    out = GANObjective(cfg).D_main(G, constant_D(0.5), reals, c, z)
    assert (out["Loss/D/adv_fake"].item(), out["Loss/D/adv_real"].item()) == (1.5, 0.5)  # relu(1.5), relu(0.5)
    assert out["total"].item() == 2.0


def test_d_main_matching_term_uses_the_rolled_or_given_captions_only_when_weighted():
    G, D, cfg, z, c, reals = setup(matching_aware=0.25)
    out = GANObjective(cfg).D_main(G, D, reals, c, z)
    with torch.no_grad():
        fakes, _ = G(z, c)
        fake, real = d_loss_fake(D(fakes, c)).mean(), d_loss_real(D(reals, c)).mean()
        rolled = d_loss_fake(D(reals, c.roll(1, 0))).mean()
        given = d_loss_fake(D(reals, -c)).mean()
    torch.testing.assert_close(out["Loss/D/matching"], rolled)
    torch.testing.assert_close(out["total"], fake + real + 0.25 * rolled)
    out_given = GANObjective(cfg).D_main(G, D, reals, c, z, c_mismatch=-c)
    torch.testing.assert_close(out_given["Loss/D/matching"], given)
    plain = GANObjective(dataclasses.replace(cfg, matching_aware=0.0)).D_main(G, D, reals, c, z)
    assert "Loss/D/matching" not in plain
    assert torch.equal(plain["total"], fake + real)  # zero optional weights: exactly the plain loss
    with pytest.raises(ValueError, match="2 samples"):
        GANObjective(cfg).D_main(G, D, reals[:1], c[:1], z[:1])


def test_d_main_fakes_carry_no_gradient_into_g_and_d_gets_one():
    G, D, cfg, z, c, reals = setup()
    out = GANObjective(cfg).D_main(G, D, reals, c, z)
    out["total"].backward()
    assert all(p.grad is None for p in G.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())
    assert all(not v.requires_grad for k, v in out.items() if k != "total")


def test_d_main_weight_decay_of_d():
    G, D, cfg, z, c, reals = setup(weight_decay=0.1)
    objective = GANObjective(cfg)
    out = objective.D_main(G, D, reals, c, z, D_module=D)
    plain = GANObjective(dataclasses.replace(cfg, weight_decay=0.0)).D_main(G, D, reals, c, z)
    torch.testing.assert_close(out["Loss/D/l2"], l2_penalty(D).detach())
    torch.testing.assert_close(out["total"], plain["total"] + 0.05 * l2_penalty(D))
    with pytest.raises(ValueError, match="D_module"):
        objective.D_main(G, D, reals, c, z)


# ------------------------------------------------------------------ Gmain


def test_g_main_total_is_the_weighted_sum_and_grads_reach_g():
    G, D, cfg, z, c, _ = setup(ortho_reg=0.01, weight_decay=0.2)
    spy = Spy(D)
    out = GANObjective(cfg).G_main(G, spy, z, c, G_module=G)
    img, _ = G(z, c)
    adv = g_loss(D(img, c)).mean()
    torch.testing.assert_close(out["Loss/G/adv"], adv.detach())
    torch.testing.assert_close(out["Loss/G/ortho"], orthogonal_penalty(G).detach())
    torch.testing.assert_close(out["total"], adv + 0.01 * orthogonal_penalty(G) + 0.1 * l2_penalty(G))
    assert len(spy.calls) == 1 and torch.equal(spy.calls[0][0], img.detach())  # D_fn saw G's images
    out["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())


def test_g_main_plain_and_c_for_d():
    G, D, cfg, z, c, _ = setup()
    spy = Spy(D)
    out = GANObjective(cfg).G_main(G, spy, z, c, c_for_D=-c)
    assert sorted(out) == ["Loss/G/adv", "Stats/G/logits_fake", "total"]
    assert torch.equal(spy.calls[0][1], -c)
    img, _ = G(z, c)
    assert torch.equal(out["total"], g_loss(D(img, -c)).mean())
    with pytest.raises(ValueError, match="G_module"):
        GANObjective(dataclasses.replace(cfg, ortho_reg=1e-4)).G_main(G, D, z, c)


# ------------------------------------------------------------------ regularization phases


def test_g_reg_total_ema_and_every_g_parameter_gets_a_gradient():
    G, _, cfg, z, c, _ = setup(pl_weight=2.0, pl_decay=0.01)
    pl_mean = torch.tensor([0.3])
    out, new_mean = GANObjective(cfg).G_reg(G, z, c, pl_mean, interval=4, generator=torch.Generator().manual_seed(3))
    img, ws = G(z[:2], c[:2])  # loss.pl_batch_shrink 2 (the default): the first half of the batch of 4
    penalty, expected_mean, lengths = path_length_penalty(img, ws, pl_mean, 0.01, torch.Generator().manual_seed(3))
    torch.testing.assert_close(new_mean, expected_mean)
    torch.testing.assert_close(new_mean, pl_mean + 0.01 * (lengths.mean() - pl_mean))
    torch.testing.assert_close(out["Loss/G/pl"], penalty.mean().detach())
    torch.testing.assert_close(out["total"], penalty.mean() * 2.0 * 4)
    torch.testing.assert_close(out["Stats/G/pl_length"], lengths.mean())
    out["total"].backward()
    assert all(p.grad is not None for p in G.parameters())  # out_bias too, via img[:, 0, 0, 0] * 0
    assert torch.equal(G.out_bias.grad, torch.zeros_like(G.out_bias))


def test_g_reg_refuses_what_cannot_work():
    G, _, cfg, z, c, _ = setup()
    with pytest.raises(ValueError, match="G_reg_interval"):
        GANObjective(cfg).G_reg(G, z, c, 0.0, interval=0)
    with pytest.raises(ValueError, match=r"\(img, ws\)"):
        GANObjective(cfg).G_reg(lambda z, c: G(z, c)[0], z, c, 0.0, interval=4)
    with pytest.raises(ValueError, match="pl_weight is 0"):
        GANObjective(dataclasses.replace(cfg, pl_weight=0.0)).G_reg(G, z, c, 0.0, interval=4)


def test_d_reg_r1_of_a_linear_d_and_the_weighted_total():
    G, D, cfg, z, c, reals = setup(r1_gamma=10.0)
    a = D.image.weight.detach()
    out = GANObjective(cfg).D_reg(D, reals, c, interval=16)
    r1 = a.square().sum()  # grad of <a, x> w.r.t. x is a, for every sample
    torch.testing.assert_close(out["Loss/D/r1"], r1)
    torch.testing.assert_close(out["total"], r1 * 10.0 / 2 * 16)
    out_gamma = GANObjective(cfg).D_reg(D, reals, c, gamma=1.0, interval=1)
    torch.testing.assert_close(out_gamma["total"], r1 / 2)
    out["total"].backward()
    torch.testing.assert_close(D.image.weight.grad, 2 * a * 10.0 / 2 * 16)
    assert torch.equal(D.text.bias.grad, torch.zeros(1))  # in the graph through logits.sum() * 0
    assert not reals.requires_grad  # the objective works on a detached copy


# ------------------------------------------------------------------ augmentation inside


def test_augmentation_is_applied_to_everything_d_sees_and_r1_goes_through_it():
    G, D, cfg, z, c, reals = setup(matching_aware=1.0)
    flip = AugmentPipe(p=1.0, ops=("xflip",))
    objective = GANObjective(cfg, augment_pipe=flip)
    spy = Spy(D)
    objective.D_main(G, spy, reals, c, z)
    fakes, _ = G(z, c)
    assert torch.equal(spy.calls[0][0], fakes.detach().flip(3))
    assert torch.equal(spy.calls[1][0], reals.flip(3))
    assert torch.equal(spy.calls[2][0], reals.flip(3))  # the mismatched reals too
    spy.calls.clear()
    objective.G_main(G, spy, z, c)
    assert torch.equal(spy.calls[0][0], fakes.detach().flip(3))
    spy.calls.clear()
    out = objective.D_reg(spy, reals, c, interval=1)
    assert torch.equal(spy.calls[0][0], reals.flip(3))
    # gradient w.r.t. the un-augmented reals is the flipped a; its squared norm is still ||a||^2
    torch.testing.assert_close(out["Loss/D/r1"], D.image.weight.detach().square().sum())


def test_all_four_phases_on_the_real_networks_with_ada():
    torch.manual_seed(0)
    G, D = build_networks(
        "stylegan2", z_dim=8, c_dim=6, img_resolution=16, channel_base=64, channel_max=8,
        generator_kwargs=dict(w_dim=8, mapping_layers=2), discriminator_kwargs=dict(mbstd_group_size=2),
    )
    augment_pipe = AugmentPipe(p=0.5, generator=torch.Generator().manual_seed(0))
    objective = GANObjective(LossConfig(matching_aware=0.5), augment_pipe)
    z, c, reals = torch.randn(4, 8), torch.randn(4, 6), torch.rand(4, 3, 16, 16) * 2 - 1
    G_fn = lambda z, c: G(z, c, return_ws=True)  # noqa: E731
    D_fn = lambda img, c: D(img, c, return_features=True)  # (logits, features) is accepted  # noqa: E731
    for phase in ("G_main", "G_reg", "D_main", "D_reg"):
        for p in (*G.parameters(), *D.parameters()):
            p.grad = None
        if phase == "G_main":
            out = objective.G_main(G_fn, D_fn, z, c)
        elif phase == "G_reg":
            out, pl_mean = objective.G_reg(G_fn, z[:2], c[:2], torch.zeros([1]), interval=4)
            assert pl_mean.shape == (1,) and pl_mean.item() > 0
        elif phase == "D_main":
            out = objective.D_main(G_fn, D_fn, reals, c, z)
        else:
            out = objective.D_reg(D_fn, reals, c, interval=16)
        out["total"].backward()
        trained = G if phase.startswith("G") else D
        grads = [p.grad for p in trained.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), phase
        assert sum(g.abs().sum() for g in grads) > 0, phase
        if phase == "D_main":
            assert all(p.grad is None for p in G.parameters())


def test_negative_weights_are_refused():
    with pytest.raises(ValueError, match="loss.r1_gamma"):
        GANObjective(LossConfig(r1_gamma=-1.0))
