"""loss.kind=rpgan (R3GAN's relativistic pairing loss) with R2: the per-pair losses against values worked out by
hand, which networks and tensors get gradients in each phase, how fakes are paired with reals, R2's value and its
lazy-interval scaling next to R1's, the config keys, the monitor's and the tick line's view of the paired loss,
and a few real training iterations on DeepSpeed engines."""

import math

import pytest
import torch
from torch import nn

from dist_util import PARTITION_ALL, floats, run_ranks, setup_training, tiny_cfg
from test_objective import Spy, setup
from textgan.config import LossConfig
from textgan.losses import GANObjective, d_loss_fake, d_loss_real, d_loss_relativistic, g_loss, g_loss_relativistic
from textgan.losses.objective import ContrastiveBatch, resolve_r2_gamma
from textgan.losses.phases import PhaseInputs


def softplus(x: float) -> float:
    return math.log(1 + math.exp(x))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def close(actual, expected, tol=1e-6, rtol=0.0):
    actual = torch.as_tensor(actual, dtype=torch.float64)
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), atol=tol, rtol=rtol)


# ------------------------------------------------------------------ the per-pair losses


def test_relativistic_losses_of_a_few_pairs_by_hand():
    real = torch.tensor([2.0, 0.0, -1.0, 5.0])
    fake = torch.tensor([-1.0, 0.0, 0.5, 5.0])
    # D: softplus(fake - real) = log(1 + e^(fake - real)); G: the same with real - fake
    d_expected = [math.log(1 + math.exp(-3)), math.log(2), math.log(1 + math.exp(1.5)), math.log(2)]
    g_expected = [math.log(1 + math.exp(3)), math.log(2), math.log(1 + math.exp(-1.5)), math.log(2)]
    close(d_loss_relativistic(real, fake), d_expected)  # 0.048587, 0.693147, 1.701413, 0.693147
    close(g_loss_relativistic(real, fake), g_expected)  # 3.048587, 0.693147, 0.201413, 0.693147
    close(d_loss_relativistic(real, fake), [0.048587, 0.693147, 1.701413, 0.693147], tol=1e-6)
    # only the difference counts: D's output shifted by a constant gives the same losses
    close(d_loss_relativistic(real + 7, fake + 7), d_expected, tol=1e-5)
    # D's [N, 1] logits are per-sample pairs too
    close(g_loss_relativistic(real[:, None], fake[:, None]), g_expected)


def test_relativistic_losses_refuse_unpaired_shapes_and_single_logit_functions_refuse_rpgan():
    with pytest.raises(ValueError, match="2 real and 3 fake"):
        d_loss_relativistic(torch.zeros(2), torch.zeros(3))
    for function in (d_loss_real, d_loss_fake, g_loss):
        with pytest.raises(ValueError, match=rf"{function.__name__}\(\).*rpgan.*d_loss_relativistic"):
            function(torch.zeros(2), "rpgan")


# ------------------------------------------------------------------ Gmain and Dmain with tensors set by hand


class FillG(nn.Module):
    """Fake i is a 1x2x2 image filled with gain * z[i, 0]; its condition is ignored."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.0))

    def forward(self, z, c):
        return (self.gain * z[:, :1, None, None]).expand(-1, 1, 2, 2)


class ScoreD(nn.Module):
    """logit = scale * mean(image) + text * c[:, 0]: an image's score plus its caption's."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.text = nn.Parameter(torch.tensor(1.0))

    def forward(self, img, c):
        return self.scale * img.mean([1, 2, 3]) + self.text * c[:, 0]


# reals filled with 1 and -1, fakes with 0 and 0.5, captions 2 and 3: real logits 3, 2; fake logits 2, 3.5;
# real - fake = 1, -1.5 (the captions cancel within a pair)
REALS = torch.tensor([1.0, -1.0])[:, None, None, None].expand(-1, 1, 2, 2).contiguous()
Z = torch.tensor([[0.0], [0.5]])
C = torch.tensor([[2.0], [3.0]])


def rpgan(**loss):
    return GANObjective(LossConfig(kind="rpgan", **loss))


def test_d_main_pairs_sample_i_with_sample_i_by_hand():
    out = rpgan(matching_aware=0.5).D_main(FillG(), ScoreD(), REALS, C, Z)
    adv = (softplus(-1.0) + softplus(1.5)) / 2  # softplus(fake - real) per pair
    # matching: the same real image with its own caption against the rolled one: D(x, c_mis) - D(x, c) = 1, -1
    matching = (softplus(1.0) + softplus(-1.0)) / 2
    close(out["Loss/D/adv"], adv)
    close(out["Loss/D/matching"], matching)
    close(out["total"], adv + 0.5 * matching)
    assert "Loss/D/adv_real" not in out and "Loss/D/adv_fake" not in out  # a pair's loss has no halves
    close(out["Stats/D/logits_real"], 2.5)
    close(out["Stats/D/logits_fake"], 2.75)
    # r_t is the sign of real - fake (1, -1.5): 0; the real logits alone (3, 2) would say 1
    close(out["Stats/D/real_sign"], 0.0)


def test_d_main_gradients_reach_both_sides_of_each_pair_and_not_g():
    G, D = FillG(), ScoreD()
    rpgan().D_main(G, D, REALS, C, Z)["total"].backward()
    # d/dscale mean softplus(fake - real) = mean sigmoid(fake - real) * (mean(fake img) - mean(real img))
    close(D.scale.grad, (sigmoid(-1.0) * (0.0 - 1.0) + sigmoid(1.5) * (0.5 + 1.0)) / 2)
    close(D.text.grad, 0.0)  # both sides of a pair carry the same caption term
    assert G.gain.grad is None


def test_g_main_uses_the_real_logits_without_a_graph_by_hand():
    G, D = FillG(), ScoreD()
    spy = Spy(D)
    reals = REALS.clone().requires_grad_(True)
    out = rpgan().G_main(G, spy, Z, C, reals=reals)
    close(out["Loss/G/adv"], (softplus(1.0) + softplus(-1.5)) / 2)  # softplus(real - fake) per pair
    close(out["Stats/G/logits_fake"], 2.75)
    assert [torch.equal(img, x) for (img, _), x in zip(spy.calls, (G(Z, C).detach(), REALS))] == [True, True]
    assert all(torch.equal(c, C) for _, c in spy.calls)  # both sides under the row's caption
    out["total"].backward()
    assert reals.grad is None  # the real logits carry no graph
    # With D left unfrozen (the step freezes it), its gradient shows which side had a graph: the fakes only.
    # d/dscale = mean sigmoid(real - fake) * -(mean fake img); d/dtext = mean sigmoid(real - fake) * -c
    # (a graph through the real logits would add +c and cancel it to 0).
    close(D.scale.grad, (sigmoid(1.0) * -0.0 + sigmoid(-1.5) * -0.5) / 2)
    close(D.text.grad, (sigmoid(1.0) * -2.0 + sigmoid(-1.5) * -3.0) / 2)
    close(G.gain.grad, (sigmoid(1.0) * -0.0 + sigmoid(-1.5) * -0.5) / 2)  # d fake / d gain = z, scale 1


def test_g_main_with_d_frozen_gives_d_no_gradient():
    G, D = FillG(), ScoreD()
    D.requires_grad_(False)  # what the step's frozen(D) does in the G phases
    rpgan().G_main(G, D, Z, C, reals=REALS)["total"].backward()
    assert D.scale.grad is None and D.text.grad is None
    assert G.gain.grad is not None and G.gain.grad != 0


def test_g_main_needs_the_reals():
    with pytest.raises(ValueError, match="rpgan.*reals="):
        rpgan().G_main(FillG(), ScoreD(), Z, C)


def test_gmain_pairs_each_fake_row_with_the_real_its_caption_describes():
    # In the paired layout of heterologous pairs, G's row j is generated from a caption of pairs.reals[j]
    # (textgan/train/micro_batch.py); without contrastive terms pairs is None and the batch's reals are used.
    G, D, cfg, z, c, reals = setup(kind="rpgan")
    objective = GANObjective(cfg)
    gmain = objective.phases(4, 16)[0]
    rows = torch.tensor([0, 1, 0, 1])
    spy = Spy(D)
    pairs = ContrastiveBatch(c=c, reals=reals[rows])
    objective.phase_loss(gmain, PhaseInputs(G_fn=G, D_fn=spy, z=z, c=c, reals=reals, pairs=pairs))
    assert torch.equal(spy.calls[1][0], reals[rows])
    spy.calls.clear()
    objective.phase_loss(gmain, PhaseInputs(G_fn=G, D_fn=spy, z=z, c=c, reals=reals))
    assert torch.equal(spy.calls[1][0], reals)


def test_d_main_of_tiny_nets_equals_the_pairwise_formula():
    G, D, cfg, z, c, reals = setup(kind="rpgan", matching_aware=0.25)
    c_G = -c  # text noise: G's condition differs, D scores both sides under c
    out = GANObjective(cfg).D_main(G, D, reals, c, z, c_G=c_G)
    with torch.no_grad():
        fake, real = D(G(z, c_G)[0], c)[:, 0], D(reals, c)[:, 0]
        mismatch = D(reals, c.roll(1, 0))[:, 0]
    expected = sum(softplus(f - r) for f, r in zip(fake.tolist(), real.tolist())) / 4
    matching = sum(softplus(m - r) for m, r in zip(mismatch.tolist(), real.tolist())) / 4
    close(out["Loss/D/adv"], expected, tol=1e-5)
    close(out["total"], expected + 0.25 * matching, tol=1e-5)


# ------------------------------------------------------------------ R2


class SquareD(nn.Module):
    """logit = sum(w * x^2) + c[:, 0]: d logit / d x = 2 w x, a different gradient per sample."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[[1.0, 2.0]]]))  # [C=1, H=1, W=2]
        self.text = nn.Parameter(torch.tensor(1.0))

    def forward(self, img, c):
        return (self.w * img.square()).sum([1, 2, 3]) + self.text * c[:, 0]


class IdentityG(nn.Module):
    """Fake i is z[i] laid out as a 1x1x2 image (times gain = 1)."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.0))

    def forward(self, z, c):
        return self.gain * z.reshape(-1, 1, 1, 2)


R2_REALS = torch.tensor([[0.0, 1.0], [2.0, 0.0]]).reshape(2, 1, 1, 2)  # grads [0, 4], [4, 0]: 16, 16
R2_Z = torch.tensor([[1.0, -1.0], [0.5, 3.0]])  # fakes; grads [2, -4], [1, 12]: 20, 145
R2_C = torch.tensor([[1.0], [-1.0]])
R1_BY_HAND, R2_BY_HAND = (16 + 16) / 2, (20 + 145) / 2


def test_r2_is_gamma_over_2_times_the_mean_squared_gradient_on_fakes_by_hand():
    G, D = IdentityG(), SquareD()
    objective = GANObjective(LossConfig(r1_gamma=0.5, r2_gamma=0.2))  # R2 with another kind, set explicitly
    out = objective.D_reg(D, R2_REALS, R2_C, interval=4, G_fn=G, z=R2_Z)
    close(out["Loss/D/r1"], R1_BY_HAND)
    close(out["Loss/D/r2"], R2_BY_HAND)
    close(out["total"], R1_BY_HAND * 0.5 / 2 * 4 + R2_BY_HAND * 0.2 / 2 * 4)  # 16 + 33
    close(out["Stats/D/logits_fake_reg"], ((1 + 2) + 1 + (0.25 + 18) - 1) / 2)
    out["total"].backward()
    # d/dw of gamma/2 * interval * mean ||2 w x||^2 = gamma/2 * interval * mean 8 w x^2
    x_real, x_fake = R2_REALS.reshape(2, 2), R2_Z
    expected = (0.25 * 4 * (8 * D.w.detach()[0, 0] * x_real.square()).mean(0)
                + 0.1 * 4 * (8 * D.w.detach()[0, 0] * x_fake.square()).mean(0))
    close(D.w.grad[0, 0], expected.tolist(), tol=1e-5)
    assert G.gain.grad is None  # R2's fakes are detached from G
    assert D.text.grad is not None and D.text.grad == 0  # in the graph through logits.sum() * 0 only


def test_r2_fakes_come_from_c_g_and_are_scored_under_c():
    G, D = IdentityG(), SquareD()
    spy = Spy(D)
    recorded = []

    def G_fn(z, c):
        recorded.append(c.clone())
        return G(z, c)

    rpgan(r1_gamma=1.0).D_reg(spy, R2_REALS, R2_C, G_fn=G_fn, z=R2_Z, c_G=-R2_C)
    assert torch.equal(recorded[0], -R2_C)
    assert [torch.equal(c, R2_C) for _, c in spy.calls] == [True, True]  # R1's reals, then R2's fakes
    assert torch.equal(spy.calls[1][0], R2_Z.reshape(2, 1, 1, 2))


def test_r2_scales_with_the_lazy_interval_exactly_as_r1():
    G, D = IdentityG(), SquareD()
    r1_only = GANObjective(LossConfig(r1_gamma=0.6))
    both = rpgan(r1_gamma=0.6)  # r2_gamma unset: the same gamma as R1
    r2_only = GANObjective(LossConfig(r1_gamma=0.0, r2_gamma=0.6))
    for interval in (1, 4, 16):
        r1 = r1_only.D_reg(D, R2_REALS, R2_C, interval=interval)["total"]
        r2 = r2_only.D_reg(D, R2_REALS, R2_C, interval=interval, G_fn=G, z=R2_Z)["total"]
        close(r1, R1_BY_HAND * 0.3 * interval, rtol=1e-6)  # float32 sums
        close(r2, R2_BY_HAND * 0.3 * interval, rtol=1e-6)
        close(both.D_reg(D, R2_REALS, R2_C, interval=interval, G_fn=G, z=R2_Z)["total"], (r1 + r2).item(), rtol=1e-6)
    assert "Loss/D/r1" not in r2_only.D_reg(D, R2_REALS, R2_C, G_fn=G, z=R2_Z)  # R1's gamma 0: not computed
    with pytest.raises(ValueError, match="G_fn= and z="):
        both.D_reg(D, R2_REALS, R2_C)


def test_dreg_phase_runs_r2_on_the_phase_fakes_with_the_phase_interval():
    G, D, cfg, z, c, reals = setup(kind="rpgan", r1_gamma=2.0)
    objective = GANObjective(cfg)
    dreg = objective.phases(4, 16)[-1]
    assert (dreg.name, dreg.interval) == ("Dreg", 16)
    got = objective.phase_loss(dreg, PhaseInputs(G_fn=G, D_fn=D, z=z, c=c, reals=reals))
    expected = objective.D_reg(D, reals, c, interval=16, G_fn=G, z=z)
    assert got.keys() == expected.keys() >= {"Loss/D/r1", "Loss/D/r2", "total"}
    for k in got:
        assert torch.equal(got[k], expected[k]), k
    a = D.image.weight.detach()  # TinyD is linear in the image: both penalties are ||a||^2
    close(got["Loss/D/r2"], a.square().sum().item(), tol=1e-5)
    close(got["total"], 2 * a.square().sum().item() * 2.0 / 2 * 16, tol=1e-4)


def test_dreg_of_the_other_kinds_is_r1_alone_as_before():
    G, D, cfg, z, c, reals = setup()  # nonsaturating, r2_gamma unset: no R2, no fakes needed
    out = GANObjective(cfg).D_reg(D, reals, c, interval=16)
    assert sorted(out) == ["Loss/D/r1", "Stats/D/logits_real_reg", "total"]


# ------------------------------------------------------------------ r2_gamma, the phases, the config


@pytest.mark.parametrize("kind, r1, r2, expected", [
    ("rpgan", 3.0, None, 3.0), ("rpgan", 3.0, 0.0, 0.0), ("rpgan", 3.0, 1.5, 1.5),
    ("nonsaturating", 3.0, None, 0.0), ("hinge", 3.0, 0.5, 0.5),
])
def test_r2_gamma_unset_follows_r1_gamma_only_with_rpgan(kind, r1, r2, expected):
    assert resolve_r2_gamma(LossConfig(kind=kind, r1_gamma=r1, r2_gamma=r2)) == expected
    assert GANObjective(LossConfig(kind=kind, r1_gamma=r1, r2_gamma=r2)).r2_gamma == expected


def test_dreg_runs_when_r1_or_r2_has_a_weight():
    def names(**loss):
        return [p.name for p in GANObjective(LossConfig(pl_weight=0.0, **loss)).phases(4, 16)]

    assert names(kind="rpgan", r1_gamma=0.0) == ["Gmain", "Dmain"]  # R2 follows R1's 0
    assert names(kind="rpgan", r1_gamma=0.0, r2_gamma=1.0) == ["Gmain", "Dmain", "Dreg"]
    assert names(r1_gamma=0.0, r2_gamma=1.0) == ["Gmain", "Dmain", "Dreg"]
    with pytest.raises(ValueError, match="loss.r2_gamma"):
        GANObjective(LossConfig(r2_gamma=-1.0))


def test_lazy_regularization_of_d_rescales_for_r2_alone_too():
    from textgan.train.engines import lazy_reg_ratio

    assert lazy_reg_ratio(tiny_cfg("schedule.D_reg_interval=16", "loss.r1_gamma=0", "loss.r2_gamma=1"), "D") == 16 / 17
    assert lazy_reg_ratio(tiny_cfg("schedule.D_reg_interval=16", "loss.r1_gamma=0", "loss.kind=rpgan"), "D") == 1.0


def test_config_accepts_rpgan_and_refuses_bad_kinds_and_negative_r2_naming_the_key():
    from textgan.errors import UsageError

    cfg = tiny_cfg("loss.kind=rpgan")
    assert (cfg.loss.kind, cfg.loss.r2_gamma) == ("rpgan", None)
    assert tiny_cfg("loss.r2_gamma=0.5").loss.r2_gamma == 0.5
    with pytest.raises(UsageError) as info:
        tiny_cfg("loss.kind=relativistic")
    assert str(info.value) == "config key 'loss.kind' is 'relativistic'; allowed: nonsaturating, hinge, rpgan"
    with pytest.raises(UsageError, match=r"config key 'loss.r2_gamma' must be >= 0 .*got -1"):
        tiny_cfg("loss.r2_gamma=-1")


# ------------------------------------------------------------------ what reads the stats


def test_tick_line_shows_the_paired_d_loss_and_r2():
    from test_tick_line import SUMMARY, entry
    from textgan.train.tick_line import tick_line

    summary = {k: v for k, v in SUMMARY.items() if k not in ("Loss/D/adv_real", "Loss/D/adv_fake")}
    summary.update({"Loss/D/adv": entry(0.61234), "Loss/D/r2": entry(0.01234)})
    line = tick_line(12, 48_000, 25_000_000, summary)
    assert line.endswith("mem 5.21 GB  G 1.123  D 0.612  R1 0.0094  R2 0.0123")


def test_val_real_measures_minus_the_logit_with_rpgan():
    from textgan.train.val_real import real_image_loss

    logits = torch.tensor([[2.0], [-0.5]])
    close(real_image_loss(logits, "rpgan"), [-2.0, 0.5])
    close(real_image_loss(logits, "nonsaturating"), [softplus(-2.0), softplus(0.5)])


# ------------------------------------------------------------------ real engines


def _train(rank, world_size, overrides):
    from textgan.train.step import train_step

    cfg = tiny_cfg("loss.kind=rpgan", "schedule.D_reg_interval=2", "contrastive.text_noise=0.1", *overrides)
    setup, batches, state = setup_training(cfg, ds_overrides=PARTITION_ALL)
    return [floats(train_step(setup, batches, state)) for _ in range(3)]


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_few_rpgan_iterations_on_two_ranks_with_zero3_give_finite_stats(tmp_path):
    # ZeRO-3 on both engines, every parameter partitioned: the extra D forward of Gmain and the G forward of
    # Dreg are collective there, so a rank that skipped one would hang.
    results = run_ranks(_train, tmp_path, world_size=2, args=(["dist.zero_stage_G=3", "dist.zero_stage_D=3"],))
    for iterations in results:
        first, second = iterations[0], iterations[1]
        assert {"Loss/G/adv", "Loss/D/adv", "Loss/D/r1", "Loss/D/r2", "Stats/D/real_sign"} <= first.keys()
        assert "Loss/D/adv_real" not in first and "Loss/D/r2" not in second  # Dreg every 2 iterations
        assert all(math.isfinite(v) for it in iterations for v in it.values())
        assert all(it["Health/nonfinite_skips"] == 0 for it in iterations)
        assert first["Loss/D/r2"] > 0 and -1 <= first["Stats/D/real_sign"] <= 1
