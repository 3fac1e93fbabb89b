"""The two DeepSpeed engines and one training iteration on them, for real: 2 ranks, gloo, CPU.

One spawned job (module fixture `job`) trains the tiny nets under every ZeRO stage and a few variants,
checks gradient accumulation and runs the non-finite guard; the tests below assert on its results.
Pure tests (configs, EMA arithmetic, argument checks) need no processes.
"""

import pytest
import torch

from dist_util import PARTITION_ALL, floats, run_ranks, setup_training, snapshot, tiny_cfg, tiny_networks
from textgan.errors import UsageError
from textgan.losses.objective import GANObjective
from textgan.nets.generator import Generator, SynthesisNetwork

# ---------------------------------------------------------------------- pure: configs and arithmetic


def test_ds_config_is_one_dict_per_engine_from_our_config():
    from textgan.train.engines import CPU_BUCKET_ELEMENTS, ds_config

    cfg = tiny_cfg("dist.zero_stage_G=3", "dist.zero_stage_D=1", "schedule.batch_size=8", "loss.grad_clip=5")
    G, D = ds_config(cfg, "G", world_size=2), ds_config(cfg, "D", world_size=2)
    assert (G["zero_optimization"]["stage"], D["zero_optimization"]["stage"]) == (3, 1)
    assert G is not D and G["zero_optimization"] is not D["zero_optimization"]
    # batch 8 = batch_gpu 2 x world 2 x accumulation 2
    assert (G["train_batch_size"], G["train_micro_batch_size_per_gpu"], G["gradient_accumulation_steps"]) == (8, 2, 2)
    assert "optimizer" not in G  # a client Adam: no fused_adam JIT build, no AdamW decay
    assert G["gradient_clipping"] == 5.0 and not G["bf16"]["enabled"] and not G["fp16"]["enabled"]
    assert G["zero_optimization"]["reduce_bucket_size"] == CPU_BUCKET_ELEMENTS < 5e8
    on_gpu = ds_config(cfg, "G", world_size=2, device_type="cuda")
    assert "reduce_bucket_size" not in on_gpu["zero_optimization"]  # DeepSpeed's defaults on GPUs
    merged = ds_config(cfg, "G", 2, overrides={"zero_optimization": {"stage3_param_persistence_threshold": 0}})
    zero = merged["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_param_persistence_threshold"] == 0
    assert ds_config(tiny_cfg("dist.precision=bf16"), "D", 2)["bf16"]["enabled"]


def test_ds_config_refuses_a_batch_that_does_not_divide():
    from textgan.train.engines import ds_config

    with pytest.raises(UsageError, match="schedule.batch_size.*batch_gpu x ranks = 2 x 3"):
        ds_config(tiny_cfg("schedule.batch_size=8"), "G", world_size=3)


def test_ds_config_takes_the_accumulation_its_caller_checked(monkeypatch):
    # build_engines checks the world once and hands the result to both engines' configs
    from textgan.train import engines

    def no_second_check(cfg, world_size):
        raise AssertionError("check_world called again")

    monkeypatch.setattr(engines, "check_world", no_second_check)
    cfg = tiny_cfg("schedule.batch_size=8")
    assert engines.ds_config(cfg, "G", world_size=2, accum=2)["gradient_accumulation_steps"] == 2


def test_lazy_regularization_rescales_lr_and_betas():
    from textgan.train.engines import _adam, lazy_reg_ratio

    cfg = tiny_cfg("schedule.G_reg_interval=4", "schedule.D_reg_interval=16", "loss.pl_weight=2")
    assert lazy_reg_ratio(cfg, "G") == 4 / 5 and lazy_reg_ratio(cfg, "D") == 16 / 17
    assert lazy_reg_ratio(tiny_cfg("loss.pl_weight=0"), "G") == 1.0  # no Greg phase, no rescaling
    opt = _adam([torch.nn.Parameter(torch.zeros(2))], 0.0025, cfg, 16 / 17)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.0025 * 16 / 17)
    assert group["betas"] == (0.0, pytest.approx(0.99 ** (16 / 17))) and isinstance(group["betas"][0], float)


def test_ema_beta_follows_stylegan():
    from textgan.train.ema import ema_beta

    cfg = tiny_cfg("schedule.ema_kimg=10", "schedule.ema_rampup=0.05")
    assert ema_beta(cfg, 32, 0) == 0.0  # ramp-up from nothing: G_ema starts as G
    assert ema_beta(cfg, 32, 100_000) == pytest.approx(0.5 ** (32 / 5000))  # 0.05 x 100k < 10k images
    assert ema_beta(cfg, 32, 10**7) == pytest.approx(0.5 ** (32 / 10_000))  # capped by ema_kimg
    no_rampup = tiny_cfg("schedule.ema_kimg=10", "schedule.ema_rampup=null")
    assert ema_beta(no_rampup, 32, 0) == pytest.approx(0.5 ** (32 / 10_000))


def test_frozen_restores_requires_grad():
    from textgan.train.engines import frozen

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    net[1].bias.requires_grad_(False)
    with frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == [True, True, True, False]


def test_build_engines_refuses_fp16_on_cpu_before_starting_anything():
    from textgan.runtime import Runtime
    from textgan.train.engines import build_engines

    cfg = tiny_cfg("dist.precision=fp16")
    G, D = tiny_networks(cfg)
    runtime = Runtime(0, 0, 1, 1, torch.device("cpu"), "none")
    with pytest.raises(UsageError, match="fp16.*CPU"):
        build_engines(G, D, cfg, runtime)


# ---------------------------------------------------------------------- the spawned job


class ConstNoiseSynthesis(SynthesisNetwork):
    def forward(self, ws, noise_mode="random", generator=None):
        return super().forward(ws, noise_mode="const", generator=generator)


class ConstNoiseGenerator(Generator):
    """Noise inputs drawn per micro-batch would differ between accumulation splits; fixed noise
    makes one iteration's result independent of the split."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.synthesis.__class__ = ConstNoiseSynthesis


class PoisonableObjective(GANObjective):
    """With `poison` set, D's logits get + sqrt(|0 * logits|): the loss stays finite, D's
    gradients become NaN (0 * inf), the case a loss check alone would miss."""

    poison = False

    def D_main(self, G_fn, D_fn, reals, c, z, c_mismatch=None, D_module=None, **kwargs):
        if self.poison:
            inner = D_fn

            def D_fn(img, c):  # noqa: F811 (wraps the one passed in)
                logits = inner(img, c)
                return logits + (logits * 0).abs().sqrt()

        return super().D_main(G_fn, D_fn, reals, c, z, c_mismatch, D_module, **kwargs)


STAGE_VARIANTS = {
    # name: (G stage, D stage, extra config)
    "s0": (0, 0, []), "s1": (1, 1, []), "s2": (2, 2, []), "s3": (3, 3, []),
    "s0-nopl": (0, 0, ["loss.pl_weight=0"]), "s3-nopl": (3, 3, ["loss.pl_weight=0"]),
    "s0-penalties": (0, 0, ["loss.pl_weight=0", "loss.weight_decay=0.01", "loss.ortho_reg=0.001"]),
    "s3-penalties": (3, 3, ["loss.pl_weight=0", "loss.weight_decay=0.01", "loss.ortho_reg=0.001"]),
}
ITERATIONS = 3


def _stages(rank):
    from textgan.train.engines import frozen
    from textgan.train.schedules import apply_lr
    from textgan.train.step import generator_fn, train_step

    out = {}
    for name, (g_stage, d_stage, extra) in STAGE_VARIANTS.items():
        cfg = tiny_cfg(f"dist.zero_stage_G={g_stage}", f"dist.zero_stage_D={d_stage}", *extra)
        setup, batches, state = setup_training(cfg, ds_overrides=PARTITION_ALL)
        engines = setup.engines
        losses = [floats(train_step(setup, batches, state)) for _ in range(ITERATIONS)]
        result = {"losses": losses, **snapshot(engines)}
        # The learning rate is set through the client optimizers on every stage: lr 0 -> no change.
        apply_lr(engines.G_opt, engines.G_base_lr, 0.0)
        apply_lr(engines.D_opt, engines.D_base_lr, 0.0)
        train_step(setup, batches, state)
        after = snapshot(engines)
        result["lr0_unchanged"] = all(torch.equal(result[n][k], after[n][k]) for n in ("G", "D") for k in after[n]
                                      if not k.endswith("w_avg"))
        # The freezing fact: a G backward through D leaves D without gradients; unfrozen, stage 0
        # would silently collect them (and stages 2/3 would assert).
        G_fn, objective = generator_fn(engines.G.module, 0.0), GANObjective(tiny_cfg().loss)  # no penalties
        z, c = torch.randn([2, cfg.model.z_dim]), torch.randn([2, 8])
        with frozen(engines.D.module):
            engines.G.backward(objective.G_main(G_fn, engines.D.module, z, c)["total"])
        result["D_grads_after_frozen_G_phase"] = sum(p.grad is not None for p in engines.D.module.parameters())
        if name == "s0":
            engines.G.backward(objective.G_main(G_fn, engines.D.module, z, c)["total"])  # not frozen
            result["D_grads_after_unfrozen_G_phase"] = sum(p.grad is not None for p in engines.D.module.parameters())
        out[name] = result
    return out


def _accumulation(rank):
    """One iteration with batch 8 as 2 (batch_gpu) x 2 (ranks) x 2 (micro-steps) and as 4 x 2 x 1.
    Everything that depends on the split is held fixed: minibatch-stddev groups of 1, constant noise,
    no style mixing, no path length (its running mean is updated per micro-batch, as in StyleGAN).
    Adam's eps is large so that its first step is ~linear in the gradient rather than ~sign(g),
    which would turn rounding differences of near-zero gradients into full steps."""
    from textgan.train.step import train_step

    out = {}
    for batch_gpu in (2, 4):
        cfg = tiny_cfg("schedule.batch_size=8", f"schedule.batch_gpu={batch_gpu}", "model.mbstd_group_size=1",
                       "loss.style_mixing_prob=0", "loss.pl_weight=0", "dist.zero_stage_G=2", "dist.zero_stage_D=2",
                       "optim.eps=0.001")
        # SyntheticBatches: a rank's samples are the same whatever the batch_gpu
        setup, batches, state = setup_training(cfg, generator_cls=ConstNoiseGenerator)
        train_step(setup, batches, state)
        engines = setup.engines
        out[batch_gpu] = {"accum": engines.accum, "samples": state.cur_nimg, **snapshot(engines)}
    return out


# D on stage 0 (where DeepSpeed checks nothing itself: SkippableAdam does the skipping) and on
# stage 3 (where DeepSpeed also refuses a step with a non-finite gradient norm).
NONFINITE_LAYOUTS = {"G2-D0": (2, 0), "G1-D3": (1, 3)}


def _nonfinite_guard(rank, g_stage, d_stage):
    from textgan.train.step import NonFiniteLossError, train_step

    cfg = tiny_cfg(f"dist.zero_stage_G={g_stage}", f"dist.zero_stage_D={d_stage}", "schedule.max_nonfinite_steps=2")
    setup, batches, state = setup_training(cfg, ds_overrides=PARTITION_ALL, objective_cls=PoisonableObjective)
    engines, objective = setup.engines, setup.objective
    # Rank 1's images are NaN in iterations 1, 5 and 6 (samples 2k, 2k+1 of iteration k).
    batches.nan_at = {2, 3, 10, 11, 12, 13} if rank == 1 else set()
    record = []

    def run(poison=False):
        objective.poison = poison
        before = snapshot(engines)
        stats = train_step(setup, batches, state)
        after = snapshot(engines)
        record.append({
            "skips": stats["Health/nonfinite_skips"], "in_a_row": state.nonfinite_in_a_row,
            "reason": state.nonfinite_reason, "stats": sorted(stats),
            "D_unchanged": all(torch.equal(before["D"][k], after["D"][k]) for k in after["D"]),
            "G_unchanged": all(torch.equal(before["G"][k], after["G"][k]) for k in after["G"]),
        })

    run()  # 0: clean
    run()  # 1: NaN reals on rank 1 -> Dmain and Dreg skipped everywhere
    run()  # 2: clean again
    run(poison=rank == 0)  # 3: finite losses, NaN D gradients on rank 0 only
    run()  # 4: clean
    run()  # 5: NaN reals again: 1 in a row
    try:
        run()  # 6: 2 in a row -> stop
        error = None
    except NonFiniteLossError as e:
        error = str(e)
    return {"record": record, "error": error, "nonfinite_total": state.nonfinite_total}


def engine_job(rank, world_size):
    nonfinite = {name: _nonfinite_guard(rank, *stages) for name, stages in NONFINITE_LAYOUTS.items()}
    return {"stages": _stages(rank), "accumulation": _accumulation(rank), "nonfinite": nonfinite}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return run_ranks(engine_job, tmp_path_factory.mktemp("engines"), world_size=2)


# ---------------------------------------------------------------------- stages


def _assert_same(a: dict, b: dict, exact=True, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


@pytest.mark.multiproc
@pytest.mark.parametrize("name", ["s1", "s2"])
def test_zero_stages_1_2_train_bitwise_like_stage_0(job, name):
    ref, got = job[0]["stages"]["s0"], job[0]["stages"][name]
    assert got["losses"] == ref["losses"]  # every loss term, R1 and path length, every iteration
    for part in ("G", "D", "G_ema"):
        _assert_same(ref[part], got[part])


@pytest.mark.multiproc
def test_zero_stage_3_matches_stage_0(job):
    ref, got = job[0]["stages"]["s0"], job[0]["stages"]["s3"]
    for it_ref, it_got in zip(ref["losses"], got["losses"]):
        assert it_ref.keys() == it_got.keys()
        for k in it_ref:
            assert it_got[k] == pytest.approx(it_ref[k], rel=1e-5, abs=1e-6), k
    # The path length's gradient of the [1]-shaped noise strengths differs by 1 ulp on stage 3
    # (summation order); Adam turns that into differences of ~1e-5 in those weights after 3 steps.
    for part in ("G", "D", "G_ema"):
        _assert_same(ref[part], got[part], exact=False, atol=1e-4)


@pytest.mark.multiproc
@pytest.mark.parametrize("variant", ["nopl", "penalties"])
def test_zero_stage_3_r1_ema_and_weight_penalties_are_bitwise(job, variant):
    ref, got = job[0]["stages"][f"s0-{variant}"], job[0]["stages"][f"s3-{variant}"]
    assert got["losses"] == ref["losses"]
    assert all(it["Loss/D/r1"] > 0 for it in got["losses"])
    if variant == "penalties":
        assert all(it["Loss/G/l2"] > 0 and it["Loss/G/ortho"] > 0 and it["Loss/D/l2"] > 0 for it in got["losses"])
    for part in ("G", "D", "G_ema"):
        _assert_same(ref[part], got[part])


@pytest.mark.multiproc
def test_training_moves_and_ranks_agree(job):
    cfg = tiny_cfg()
    G0, D0 = tiny_networks(cfg)
    for name, result in job[0]["stages"].items():
        losses = [it["Loss/D/adv_real"] for it in result["losses"]]
        assert len(set(losses)) == ITERATIONS, name  # D learns: its loss changes every iteration
        assert not torch.equal(result["G"]["mapping.layers.0.weight"], G0.state_dict()["mapping.layers.0.weight"])
        assert not torch.equal(result["D"]["fromrgb.weight"], D0.state_dict()["fromrgb.weight"])
        other = job[1]["stages"][name]
        for part in ("G", "D", "G_ema"):  # replicas (and G_ema, buffers included) identical on both ranks
            _assert_same(result[part], other[part])
        assert "Loss/G/pl" in result["losses"][0] or "nopl" in name or "penalties" in name


@pytest.mark.multiproc
def test_learning_rate_reaches_the_optimizer_on_every_stage(job):
    assert all(result["lr0_unchanged"] for result in job[0]["stages"].values())


@pytest.mark.multiproc
def test_G_phase_leaves_D_without_gradients(job):
    for name, result in job[0]["stages"].items():
        assert result["D_grads_after_frozen_G_phase"] == 0, name
    # the control: without freezing, stage 0 silently fills D's gradients
    assert job[0]["stages"]["s0"]["D_grads_after_unfrozen_G_phase"] > 0


# ---------------------------------------------------------------------- accumulation


@pytest.mark.multiproc
def test_gradient_accumulation_matches_a_bigger_micro_batch(job):
    for rank in (0, 1):
        split, whole = job[rank]["accumulation"][2], job[rank]["accumulation"][4]
        assert (split["accum"], whole["accum"]) == (2, 1)
        assert split["samples"] == whole["samples"] == 8
        for part in ("G", "D", "G_ema"):
            # w_avg (truncation centre) is a running mean updated once per micro-batch
            keep = {k: v for k, v in split[part].items() if not k.endswith("w_avg")}
            _assert_same(keep, {k: whole[part][k] for k in keep}, exact=False, atol=1e-6)
        cfg = tiny_cfg()
        G0, _ = tiny_networks(cfg)
        assert not torch.equal(split["G"]["mapping.layers.0.weight"], G0.state_dict()["mapping.layers.0.weight"])


# ---------------------------------------------------------------------- non-finite guard


@pytest.mark.multiproc
@pytest.mark.parametrize("layout", NONFINITE_LAYOUTS)
def test_nonfinite_steps_are_skipped_on_every_rank_and_counted(job, layout):
    for rank in (0, 1):
        rec = job[rank]["nonfinite"][layout]["record"]
        clean, nan_reals, clean2, nan_grads, clean3, nan_again = rec
        assert (clean["skips"], clean["in_a_row"], clean["D_unchanged"]) == (0, 0, False)
        # NaN images on rank 1: Dmain and Dreg skipped on both ranks, D untouched, G still trained
        assert (nan_reals["skips"], nan_reals["in_a_row"]) == (2, 1)
        assert nan_reals["D_unchanged"] and not nan_reals["G_unchanged"]
        assert "Loss/D/adv_real" in nan_reals["reason"] and "rank(s) [1]" in nan_reals["reason"]
        assert "Loss/D/adv_real" not in nan_reals["stats"]  # a skipped phase reports no losses
        assert (clean2["skips"], clean2["in_a_row"], clean2["D_unchanged"]) == (0, 0, False)
        # finite losses but NaN gradients on rank 0 only: Dmain skipped everywhere, Dreg applied
        assert (nan_grads["skips"], nan_grads["in_a_row"]) == (1, 1)
        assert not nan_grads["D_unchanged"]  # Dreg still stepped D
        assert "gradients of D" in nan_grads["reason"] and "phase Dmain, rank(s) [0]" in nan_grads["reason"]
        assert (clean3["in_a_row"], nan_again["in_a_row"]) == (0, 1)
    # 5 and 6 are consecutive bad iterations: the second one stops the run with the term named
    for rank in (0, 1):
        error = job[rank]["nonfinite"][layout]["error"]
        assert error is not None and "Loss/D/adv_real" in error and "2 iterations in a row" in error
        assert "schedule.max_nonfinite_steps=2" in error
        assert job[rank]["nonfinite"][layout]["nonfinite_total"] == 4
