"""textgan.augment: ADA's pipe and DiffAugment are exact where they should be, differentiable twice,
deterministic with a seeded generator, and ADA's p follows StyleGAN2-ADA's update rule."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from textgan.augment import ADA_OPS, POLICIES, AugmentPipe, DiffAugment, build_augment
from textgan.augment.ada import _zoom, reflect
from textgan.config import AugmentConfig
from textgan.errors import UsageError


def images(n=4, size=8, seed=0, dtype=torch.float32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


def seeded(seed=1):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ ADA: identity, change, determinism


def test_p_zero_is_the_identity_bit_for_bit():
    x = images()
    assert torch.equal(AugmentPipe(p=0.0)(x), x)


def test_samples_an_op_skips_pass_through_exactly():
    x = images(n=16)
    out = AugmentPipe(p=0.3, ops=("xflip", "scale", "hue"), generator=seeded())(x)
    untouched = [torch.equal(out[n], x[n]) for n in range(16)]
    assert any(untouched) and not all(untouched)  # (1 - 0.3)^3 = 34% of samples untouched on average


@pytest.mark.parametrize("op", ADA_OPS)
def test_each_op_at_p_one_changes_images(op):
    x = images(n=8, size=16)
    assert not torch.equal(AugmentPipe(p=1.0, ops=(op,), generator=seeded())(x), x)


def test_seeded_generator_makes_the_pipe_deterministic():
    x = images()
    a = AugmentPipe(p=0.7, generator=seeded(5))(x)
    b = AugmentPipe(p=0.7)(x, generator=seeded(5))
    c = AugmentPipe(p=0.7)(x, generator=seeded(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ------------------------------------------------------------------ ADA: each op does what it says


def test_reflect_matches_torch_reflect_padding():
    row = torch.arange(4.0)[None, None, None]  # [1, 1, 1, 4]
    padded = F.pad(row, (3, 3, 0, 0), mode="reflect")[0, 0, 0]
    assert reflect(torch.arange(-3, 7), 4).tolist() == padded.long().tolist()  # 3 2 1 0 1 2 3 2 1 0


def test_translation_is_an_integer_shift_with_reflected_borders():
    x = images(n=6, size=16)
    out = AugmentPipe(p=1.0, ops=("translate",), generator=seeded())(x)
    pad = 2  # round(0.125 * 16)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    for n in range(6):
        shifts = [(ty, tx) for ty in range(-2, 3) for tx in range(-2, 3)]
        crops = [padded[n, :, pad - ty : pad - ty + 16, pad - tx : pad - tx + 16] for ty, tx in shifts]
        assert any(torch.equal(out[n], crop) for crop in crops)


def test_geometric_ops_are_exact_permutations():
    x = images(n=6)
    flipped = AugmentPipe(p=1.0, ops=("xflip",), generator=seeded())(x)
    assert torch.equal(flipped, x.flip(3))
    rotated = AugmentPipe(p=1.0, ops=("rotate90",), generator=seeded())(x)
    for n in range(6):
        assert any(torch.equal(rotated[n], x[n].rot90(k, dims=(1, 2))) for k in (1, 2, 3))


def test_zoom_by_two_about_the_centre_of_a_ramp():
    ramp = torch.arange(4.0).expand(1, 3, 4, 4)  # value = column index; centre 1.5
    out = _zoom(ramp, torch.tensor([2.0]))
    assert out[0, 0, 0].tolist() == [0.75, 1.25, 1.75, 2.25]  # (j - 1.5) / 2 + 1.5
    assert torch.equal(_zoom(ramp, torch.tensor([1.0])), ramp)


def test_colour_ops_keep_their_invariants():
    x = images(n=6)
    grey = x.mean(1, keepdim=True).expand_as(x).contiguous()
    brighter = AugmentPipe(p=1.0, ops=("brightness",), generator=seeded())(x)
    offset = brighter - x
    torch.testing.assert_close(offset, offset[:, :1, :1, :1].expand_as(x))  # one constant per sample
    contrast = AugmentPipe(p=1.0, ops=("contrast",), generator=seeded())(x)
    ratio = contrast / x
    torch.testing.assert_close(ratio, ratio[:, :1, :1, :1].expand_as(x))  # one factor per sample, about 0
    for op in ("hue", "saturation"):  # both leave grey pixels alone
        torch.testing.assert_close(AugmentPipe(p=1.0, ops=(op,), generator=seeded())(grey), grey)
    hue = AugmentPipe(p=1.0, ops=("hue",), generator=seeded())(x)  # a rotation about the grey axis
    torch.testing.assert_close(hue.mean(1), x.mean(1))
    torch.testing.assert_close(hue.norm(dim=1), x.norm(dim=1))
    flipped = AugmentPipe(p=1.0, ops=("lumaflip",), generator=seeded(3))(grey)
    for n in range(6):  # each sample's grey level is kept or negated
        assert torch.allclose(flipped[n], grey[n], atol=1e-6) or torch.allclose(flipped[n], -grey[n], atol=1e-6)


def test_refuses_images_the_ops_cannot_handle():
    with pytest.raises(ValueError, match="RGB"):
        AugmentPipe(p=1.0, ops=("hue",))(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="square"):
        AugmentPipe(p=1.0, ops=("rotate90",))(torch.zeros(2, 3, 8, 4))
    with pytest.raises(ValueError, match="unknown ops"):
        AugmentPipe(ops=("shear",))


# ------------------------------------------------------------------ differentiability


@pytest.mark.parametrize("op", ADA_OPS)
def test_each_ada_op_passes_gradcheck_and_gradgradcheck(op):
    x = images(n=2, size=4, dtype=torch.float64).requires_grad_(True)
    fn = lambda t: AugmentPipe(p=1.0, ops=(op,), generator=seeded())(t)  # noqa: E731  same draw every call
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_r1_through_the_whole_pipe_backpropagates_to_d():
    x = images(n=3, size=8).requires_grad_(True)
    weight = torch.randn(3, 8, 8, requires_grad=True)
    logits = (AugmentPipe(p=1.0, generator=seeded())(x) * weight).sum([1, 2, 3])
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ adjust


def test_adjust_moves_p_by_the_formula_and_clamps():
    pipe = AugmentPipe(p=0.5, ada_target=0.6, ada_kimg=500, ada_interval=4)
    step = 32 * 4 / (500 * 1000)  # batch x interval / (ada_kimg * 1000) = 0.000256
    assert pipe.adjust(0.9, batch_images=32) == pytest.approx(0.5 + step)
    assert pipe.adjust(torch.tensor(0.1), batch_images=32) == pytest.approx(0.5)
    assert pipe.adjust(0.1, batch_images=32) == pytest.approx(0.5 - step)
    assert pipe.adjust(0.6, batch_images=32) == pytest.approx(0.5 - step)  # at the target: no move
    assert AugmentPipe(p=1.0).adjust(1.0, 1000) == 1.0 and AugmentPipe(p=0.0).adjust(-1.0, 1000) == 0.0
    fast = AugmentPipe(p=0.999, ada_kimg=0.001)
    assert fast.adjust(1.0, 64) == 1.0  # clamped


def test_p_is_a_shape_one_buffer_that_checkpoints():
    pipe = AugmentPipe(p=0.25)
    assert pipe.p.shape == (1,) and "p" in pipe.state_dict()
    fresh = AugmentPipe()
    fresh.load_state_dict(pipe.state_dict())
    assert fresh.p.item() == 0.25


# ------------------------------------------------------------------ DiffAugment


@pytest.mark.parametrize("policy", POLICIES)
def test_each_diffaugment_policy_changes_images_and_is_twice_differentiable(policy):
    x = images(n=4, size=8)
    assert not torch.equal(DiffAugment(policy, generator=seeded())(x), x)
    small = images(n=2, size=4, dtype=torch.float64).requires_grad_(True)
    fn = lambda t: DiffAugment(policy, generator=seeded())(t)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (small,))
    assert torch.autograd.gradgradcheck(fn, (small,))


def test_diffaugment_translation_shifts_with_zero_padding_and_cutout_zeroes_one_square():
    x = images(n=6, size=16) + 3.0  # no zeros in the input
    moved = DiffAugment("translation", generator=seeded())(x)
    padded = F.pad(x, (2, 2, 2, 2))  # zero padding; shift up to int(16 * 0.125 + 0.5) = 2
    for n in range(6):
        crops = [padded[n, :, 2 + dy : 18 + dy, 2 + dx : 18 + dx] for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(torch.equal(moved[n], crop) for crop in crops)
    cut = DiffAugment("cutout", generator=seeded())(x)
    for n in range(6):
        zero = cut[n, 0] == 0
        rows, cols = zero.any(1).nonzero()[:, 0], zero.any(0).nonzero()[:, 0]
        assert zero.sum() == len(rows) * len(cols)  # a rectangle ...
        assert 4 <= len(rows) <= 8 and 4 <= len(cols) <= 8  # ... of the 8x8 square, clipped at the border
        assert torch.equal(cut[n][:, ~zero], x[n][:, ~zero])


def test_diffaugment_is_deterministic_with_a_seed_and_refuses_unknown_policies():
    x = images()
    assert torch.equal(DiffAugment(generator=seeded(2))(x), DiffAugment()(x, generator=seeded(2)))
    with pytest.raises(ValueError, match="color, translation, cutout"):
        DiffAugment("color,blur")


# ------------------------------------------------------------------ build_augment


def test_build_augment_follows_the_config():
    assert build_augment(AugmentConfig(kind="none")) is None
    ada = build_augment(AugmentConfig(kind="ada", ada_target=0.7, ada_kimg=100, ada_interval=2))
    assert isinstance(ada, AugmentPipe) and ada.p.item() == 0.0
    assert (ada.ada_target, ada.ada_kimg, ada.ada_interval) == (0.7, 100.0, 2)
    diff = build_augment(AugmentConfig(kind="diffaugment", diffaugment="cutout,color"))
    assert isinstance(diff, DiffAugment) and diff.policy == ("cutout", "color")
    with pytest.raises(UsageError, match="augment.diffaugment"):
        build_augment(AugmentConfig(kind="diffaugment", diffaugment="colour"))
    with pytest.raises(UsageError, match="augment.ada_kimg"):
        build_augment(dataclasses.replace(AugmentConfig(kind="ada"), ada_kimg=0))
    with pytest.raises(UsageError, match="augment.kind"):
        build_augment(AugmentConfig(kind="adaptive"))
