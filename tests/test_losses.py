"""textgan.losses.adversarial and .regularizers against values worked out by hand."""

import math

import pytest
import torch
from torch import nn

from textgan.losses import (
    d_loss_fake,
    d_loss_real,
    g_loss,
    l2_penalty,
    orthogonal_penalty,
    path_length_penalty,
    r1_penalty,
)

LOGITS = torch.tensor([-2.0, 0.0, 3.0])
# softplus(x) = log(1 + e^x), written out
SP_M2, SP_0, SP_3 = math.log(1 + math.exp(-2)), math.log(2), math.log(1 + math.exp(3))  # 0.126928, 0.693147, 3.048587
SP_2, SP_M3 = math.log(1 + math.exp(2)), math.log(1 + math.exp(-3))  # 2.126928, 0.048587


def close(actual, expected, tol=1e-6):
    actual = torch.as_tensor(actual, dtype=torch.float64)
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), atol=tol, rtol=0)


# ------------------------------------------------------------------ adversarial


def test_nonsaturating_losses_are_the_softplus_forms():
    close(d_loss_real(LOGITS, "nonsaturating"), [SP_2, SP_0, SP_M3])  # softplus(-x)
    close(d_loss_fake(LOGITS, "nonsaturating"), [SP_M2, SP_0, SP_3])  # softplus(x)
    close(g_loss(LOGITS, "nonsaturating"), [SP_2, SP_0, SP_M3])  # softplus(-x)
    close(d_loss_real(LOGITS), [2.126928, 0.693147, 0.048587], tol=1e-6)  # the default kind, in numbers


def test_hinge_losses():
    close(d_loss_real(LOGITS, "hinge"), [3.0, 1.0, 0.0])  # relu(1 - x)
    close(d_loss_fake(LOGITS, "hinge"), [0.0, 1.0, 4.0])  # relu(1 + x)
    close(g_loss(LOGITS, "hinge"), [2.0, 0.0, -3.0])  # -x


def test_column_logits_give_per_sample_losses_and_bad_input_is_refused():
    assert d_loss_fake(LOGITS[:, None]).shape == (3,)
    with pytest.raises(ValueError, match="loss.kind"):
        g_loss(LOGITS, "wasserstein")
    with pytest.raises(ValueError, match=r"\[N\] or \[N, 1\]"):
        g_loss(torch.zeros(2, 3))


# ------------------------------------------------------------------ R1


def test_r1_of_a_linear_d_is_the_squared_norm_of_its_weights():
    a = torch.tensor([[[1.0, -2.0], [0.5, 3.0]]])  # [C=1, H=2, W=2]: ||a||^2 = 1 + 4 + 0.25 + 9 = 14.25
    x = torch.randn(3, 1, 2, 2).requires_grad_(True)
    penalty = r1_penalty((x * a).sum([1, 2, 3]), x)
    close(penalty, [14.25] * 3)


def test_r1_of_a_quadratic_d_is_four_times_the_squared_image_norm():
    x = torch.tensor([[[[1.0, 2.0]]], [[[0.0, -3.0]]]]).requires_grad_(True)  # ||x||^2 = 5, 9
    penalty = r1_penalty(x.square().sum([1, 2, 3]), x)  # grad 2x -> 4 ||x||^2
    close(penalty, [20.0, 36.0])


def test_r1_backpropagates_into_d_weights_and_needs_a_grad_leaf():
    w = torch.tensor([[[[2.0, -1.0]]]], requires_grad=True)
    x = torch.randn(2, 1, 1, 2).requires_grad_(True)
    penalty = r1_penalty((x * w).sum([1, 2, 3]), x)  # = ||w||^2 = 5 per sample
    penalty.sum().backward()
    close(w.grad, [[[[8.0, -4.0]]]])  # d/dw of 2 * ||w||^2 = 4w
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(torch.zeros(2), torch.zeros(2, 1, 1, 2))


# ------------------------------------------------------------------ path length


def _identity_synthesis(ws, scale):
    """img[n, 0] = scale * ws[n] laid out as a 4x4 image: the Jacobian is scale * I."""
    return scale * ws.reshape(ws.shape[0], 1, 4, 4)


@pytest.mark.parametrize("ws_shape", [(3, 2, 8), (3, 16)])  # StyleGAN's [N, num_ws, w_dim]; cgan-like [N, w_dim]
def test_path_lengths_of_a_linear_synthesis(ws_shape):
    ws = torch.randn(ws_shape, requires_grad=True)
    img = _identity_synthesis(ws, 3.0)
    penalty, new_mean, lengths = path_length_penalty(
        img, ws, torch.tensor([1.0]), 0.01, torch.Generator().manual_seed(7)
    )
    # J^T y = 3 y / sqrt(16) with y the same seeded noise; lengths = sqrt(mean over layers of sum over w_dim)
    y = torch.randn((3, 1, 4, 4), generator=torch.Generator().manual_seed(7)) / 4.0
    grads = (3.0 * y).reshape(ws_shape)
    expected = grads.square().sum(-1).reshape(3, -1).mean(1).sqrt()
    close(lengths, expected.tolist())
    expected_mean = 1.0 + 0.01 * (expected.mean().item() - 1.0)
    close(new_mean, [expected_mean])
    close(penalty, ((expected - expected_mean) ** 2).tolist())


def test_pl_mean_is_an_ema_returned_not_mutated_and_can_be_averaged_across_ranks():
    ws = torch.randn(2, 16, requires_grad=True)
    pl_mean = torch.tensor([2.0])
    _, new_mean, _ = path_length_penalty(_identity_synthesis(ws, 1.0), ws, pl_mean, 0.1, mean_fn=lambda m: m * 0 + 5.0)
    close(new_mean, [2.0 + 0.1 * (5.0 - 2.0)])  # 2.3, using the "all ranks" mean 5 from mean_fn
    close(pl_mean, [2.0])
    assert new_mean.shape == (1,) and not new_mean.requires_grad


def test_path_length_penalty_reaches_the_synthesis_weights():
    weight = torch.tensor(2.0, requires_grad=True)
    ws = torch.randn(2, 16, requires_grad=True)
    penalty, _, lengths = path_length_penalty(_identity_synthesis(ws, weight), ws, 0.0, 0.5)
    penalty.sum().backward()
    # lengths = weight * |y_n|, mean m = 0.5 * mean(lengths): d/dweight sum (L_n - m)^2 = 2 sum (L_n - m) L_n / weight
    m = 0.5 * lengths.mean()
    close(weight.grad, (2 * ((lengths - m) * lengths).sum() / 2.0).item(), tol=1e-5)


# ------------------------------------------------------------------ orthogonal and L2


def _two_layers():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # W W^T = [[5, 11], [11, 25]]
        net[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))  # off-diagonal 0, 1, 1 (x2)
        net[0].bias.fill_(100.0)  # biases are not regularized
        net[1].bias.fill_(-100.0)
    return net


def test_orthogonal_penalty_sums_squared_off_diagonal_gram_entries():
    net = _two_layers()
    close(orthogonal_penalty(net), 2 * 11**2 + 4.0)  # 242 + 4
    close(orthogonal_penalty(net, exclude=("0.",)), 4.0)
    orthogonal_penalty(net[0]).backward()
    # gradient 4 (W W^T ⊙ (1 - I)) W = 4 [[0, 11], [11, 0]] [[1, 2], [3, 4]]
    close(net[0].weight.grad, [[132.0, 176.0], [44.0, 88.0]])


def test_orthogonal_penalty_reshapes_conv_kernels_to_out_by_rest():
    conv = nn.Conv2d(1, 2, kernel_size=(1, 2), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 1, 1, 2))
    close(orthogonal_penalty(conv), 242.0)


def test_l2_penalty_sums_squared_weights_only():
    close(l2_penalty(_two_layers()), (1 + 4 + 9 + 16) + (1 + 1 + 1 + 1))


def test_weight_penalties_refuse_modules_without_weights_and_partitioned_weights():
    with pytest.raises(ValueError, match="no weight"):
        l2_penalty(nn.ReLU())
    net = _two_layers()
    net[0].weight.data = torch.empty(0)  # what ZeRO-3 leaves outside forward
    with pytest.raises(ValueError, match="ZeRO-3"):
        orthogonal_penalty(net)
