"""A streak of skipped steps leaves every buffer as it was, and no checkpoint holds NaN or inf.

A real streak on a real DeepSpeed engine (one rank, gloo, CPU): two clean iterations at a sane
learning rate, a checkpoint, then an absurd learning rate. With the cGAN (lr 1e12) the first big G
step makes G's BatchNorm running_var inf in Dmain's forward (whose losses stay finite); with StyleGAN2
(lr 1e25) the mapping's output overflows and `mapping.w_avg` would follow. From then on every phase is
skipped. A checkpoint saved inside the streak must be finite everywhere (our weights.pt and DeepSpeed's
own module file, whose inf running_var made G_ema draw one image for every input).
"""

import json
import os
import shutil

import pytest
import torch

from dist_util import C_DIM, RESOLUTION, run_ranks, setup_training, snapshot, tiny_cfg
from textgan.train import checkpoint as ck

ABSURD_LR = {"cgan": 1e12, "stylegan2": 1e25}
WATCHED = {"cgan": "net.4.running_var", "stylegan2": "mapping.w_avg"}  # the buffers the fault campaign saw go bad
CGAN = ["model.arch=cgan", "loss.pl_weight=0", "loss.style_mixing_prob=0", "schedule.max_nonfinite_steps=1000"]


def _buffers(engines) -> dict:
    nets = {"G": engines.G.module, "D": engines.D.module, "G_ema": engines.G_ema}
    return {f"{side}.{name}": b.detach().clone() for side, net in nets.items() for name, b in net.named_buffers()}


def _tiny_cgan(cfg):
    """The tiny cGAN at the size of the tiny StyleGAN2 (dist_util), seeded alike on every rank."""
    from textgan.nets import build_networks

    with torch.random.fork_rng():
        torch.manual_seed(1234)
        return build_networks("cgan", cfg.model.z_dim, C_DIM, RESOLUTION, channel_base=256, channel_max=32)


def streak_worker(rank, world_size, root):
    from textgan.train.schedules import apply_lr
    from textgan.train.step import phases_due, train_step

    out = {}
    for arch in ("cgan", "stylegan2"):
        cfg = tiny_cfg(*(CGAN if arch == "cgan" else ["schedule.max_nonfinite_steps=1000"]))
        networks = _tiny_cgan(cfg) if arch == "cgan" else None
        setup, batches, state = setup_training(cfg, networks=networks)
        engines, objective = setup.engines, setup.objective
        ckpt_root = os.path.join(root, arch)

        def step():
            due = phases_due(cfg, objective, state.batch_idx)
            before = _buffers(engines)
            stats = train_step(setup, batches, state)
            return {"all_skipped": stats["Health/nonfinite_skips"] == len(due), "reason": state.nonfinite_reason,
                    "before": before, "after": _buffers(engines)}

        clean = [step() for _ in range(2)]
        ck.save_checkpoint(ckpt_root, "clean", engines, {"state": state.state_dict()}, keep=10)
        apply_lr(engines.G_opt, engines.G_base_lr, ABSURD_LR[arch] / cfg.optim.G_lr)
        apply_lr(engines.D_opt, engines.D_base_lr, ABSURD_LR[arch] / cfg.optim.D_lr)
        absurd = [step() for _ in range(6)]
        saved = ck.save_checkpoint(ckpt_root, "in-streak", engines, {"state": state.state_dict()}, keep=10)

        # A non-finite buffer that reaches a save (planted: the guard above keeps them out) is refused.
        listing = sorted(os.listdir(ckpt_root))
        with torch.no_grad():
            dict(engines.G.module.named_buffers())[WATCHED[arch]].fill_(float("inf"))
        try:
            ck.save_checkpoint(ckpt_root, "planted", engines, {"state": state.state_dict()}, keep=10)
            refused = None
        except ck.NonFiniteCheckpointError as e:
            refused = str(e)
        out[arch] = {"clean": clean, "absurd": absurd, "saved": saved, "refused": refused,
                     "listing_before": listing, "listing_after": sorted(os.listdir(ckpt_root)),
                     "final": snapshot(engines)}
    return out


@pytest.fixture(scope="module")
def streak(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("streak"))
    return root, run_ranks(streak_worker, root, world_size=1, args=(root,))[0]


def _finite(state: dict) -> list:
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]


@pytest.mark.multiproc
@pytest.mark.parametrize("arch", ["cgan", "stylegan2"])
def test_skipped_phases_leave_every_buffer_as_it_was(streak, arch):
    _, out = streak
    rec = out[arch]
    assert not any(it["all_skipped"] for it in rec["clean"])
    streak_its = [it for it in rec["absurd"] if it["all_skipped"]]
    assert len(streak_its) >= 4, [it["reason"] for it in rec["absurd"]]  # a real streak of skipped iterations
    for it in rec["absurd"]:
        assert not _finite(it["after"]), it["reason"]  # G, D and G_ema buffers finite after every iteration
    for it in streak_its:  # nothing applied: every buffer of G, D and G_ema exactly as before the iteration
        for name, value in it["before"].items():
            assert torch.equal(it["after"][name], value), (name, it["reason"])
    watched = f"G.{WATCHED[arch]}"
    assert torch.equal(rec["absurd"][-1]["after"][watched], streak_its[0]["before"][watched])
    assert torch.equal(rec["absurd"][-1]["after"][f"G_ema.{WATCHED[arch]}"], streak_its[0]["before"][watched])


@pytest.mark.multiproc
def test_a_forward_that_breaks_a_buffer_is_skipped_even_with_finite_losses(streak):
    # The cGAN's first big G step: Dmain's losses are finite, but G's forward (train mode) made its
    # BatchNorm running_var inf; the phase is skipped and says why.
    _, out = streak
    reasons = " | ".join(it["reason"] for it in out["cgan"]["absurd"])
    assert "buffers G.net." in reasons and "running_var" in reasons and "phase Dmain" in reasons


def _deepspeed_module(path, side):
    from textgan.train.engines import DS_CHECKPOINT_GLOBALS

    tag = json.load(open(os.path.join(path, "COMPLETE")))["tag"]
    with torch.serialization.safe_globals(DS_CHECKPOINT_GLOBALS):
        return torch.load(os.path.join(path, side, tag, "mp_rank_00_model_states.pt"), weights_only=True)["module"]


@pytest.mark.multiproc
@pytest.mark.parametrize("arch", ["cgan", "stylegan2"])
def test_every_checkpoint_on_disk_is_finite(streak, arch):
    root, out = streak
    ckpt_root = os.path.join(root, arch)
    for path in (os.path.join(ckpt_root, "clean"), out[arch]["saved"]):
        weights = torch.load(os.path.join(path, "weights.pt"), weights_only=True)
        for net in ("G", "D", "G_ema"):
            assert not _finite(weights[net]), (path, net)
        for side in ("G", "D"):  # DeepSpeed's own copy of the module, buffers included
            assert not _finite(_deepspeed_module(path, side)), (path, side)
        assert json.load(open(os.path.join(path, "COMPLETE")))["finite"] is True
    assert [os.path.basename(p) for _, p in ck.complete_checkpoints(ckpt_root)] == ["clean", "in-streak"]
    assert ck.find_latest(ckpt_root) == out[arch]["saved"]


@pytest.mark.multiproc
@pytest.mark.parametrize("arch", ["cgan", "stylegan2"])
def test_a_save_with_a_non_finite_tensor_is_refused_and_writes_nothing(streak, arch):
    _, out = streak
    rec = out[arch]
    assert rec["refused"] is not None and f"G.{WATCHED[arch]}" in rec["refused"]
    assert "Nothing was written" in rec["refused"] and "optim.G_lr" in rec["refused"]
    assert rec["listing_after"] == rec["listing_before"]  # no tmp-planted, no planted


@pytest.mark.multiproc
def test_find_latest_skips_a_non_finite_checkpoint_of_an_older_version(streak, tmp_path):
    # An older version wrote COMPLETE without "finite" and did not check: plant such a checkpoint,
    # newer (higher serial) than the good one and named by the `latest` pointer.
    root, out = streak
    ckpt_root = str(tmp_path / "checkpoints")
    good = os.path.join(ckpt_root, "000000.008")
    shutil.copytree(out["stylegan2"]["saved"], good)
    bad = os.path.join(ckpt_root, "000000.016")
    shutil.copytree(good, bad)
    weights = torch.load(os.path.join(bad, "weights.pt"), weights_only=True)
    weights["G_ema"]["mapping.w_avg"] = torch.full_like(weights["G_ema"]["mapping.w_avg"], float("nan"))
    torch.save(weights, os.path.join(bad, "weights.pt"))
    for path, serial in ((good, 1), (bad, 2)):
        marker = json.load(open(os.path.join(path, "COMPLETE")))
        marker.pop("finite")
        marker["serial"] = serial
        json.dump(marker, open(os.path.join(path, "COMPLETE"), "w"))
    with open(os.path.join(ckpt_root, "latest"), "w") as f:
        f.write("000000.016")

    assert ck.find_latest(ckpt_root) == good  # the older version's good one: its weights.pt was read
    assert ck.nonfinite_in_checkpoint(bad) == ["G_ema.mapping.w_avg"]
    with pytest.raises(ValueError, match="G_ema.mapping.w_avg"):
        ck.load_weights(bad)
    assert ck.load_weights(ckpt_root)["G_ema"]["mapping.w_avg"].isfinite().all()
