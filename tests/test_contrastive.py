"""InfoNCE (textgan.losses.contrastive): values against hand computation, temperature, positives,
gradients, and the global batch over 2 real ranks (gloo) against one rank holding everything."""

import math

import pytest
import torch
from dist_util import run_ranks

from textgan.losses.contrastive import info_nce, scale_gradient


def _reference(a, b, t, symmetric, ids=None):
    """Plain-python InfoNCE: cosine similarity / t, -log softmax at the positive(s), row mean."""
    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    A, B = [unit(r) for r in a], [unit(r) for r in b]
    n = len(A)
    logits = [[sum(x * y for x, y in zip(A[i], B[j])) / t for j in range(n)] for i in range(n)]

    def direction(L):
        total = 0.0
        for i in range(n):
            log_z = math.log(sum(math.exp(v) for v in L[i]))
            pos = [j for j in range(n) if (ids[i] == ids[j] if ids else i == j)]
            total += -sum(L[i][j] - log_z for j in pos) / len(pos)
        return total / n

    forward = direction(logits)
    if not symmetric:
        return forward
    return (forward + direction([list(col) for col in zip(*logits)])) / 2


A = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
B = [[2.0, 0.5], [0.0, 1.0], [-1.0, 1.0]]


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_matches_the_hand_computation(symmetric, t):
    got = info_nce(torch.tensor(A), torch.tensor(B), t, symmetric=symmetric)
    assert got.item() == pytest.approx(_reference(A, B, t, symmetric), rel=1e-6)


def test_known_value_of_orthogonal_pairs():
    # Identity vs identity, t = 1: each row has logit 1 at its pair and 0 elsewhere (n = 3):
    # loss = -log(e / (e + 2)).
    eye = torch.eye(3)
    assert info_nce(eye, eye, 1.0).item() == pytest.approx(-math.log(math.e / (math.e + 2)), rel=1e-6)


def test_temperature_divides_the_similarity():
    # Lafite's documented bug multiplied; dividing by a small temperature sharpens: loss falls.
    a, b = torch.tensor(A), torch.tensor(A)
    assert info_nce(a, b, 0.05).item() < info_nce(a, b, 1.0).item()
    assert info_nce(a, b, 0.5).item() == pytest.approx(_reference(A, A, 0.5, True), rel=1e-6)


def test_asymmetric_is_the_image_to_text_direction_only():
    forward = info_nce(torch.tensor(A), torch.tensor(B), 0.5, symmetric=False)
    backward = info_nce(torch.tensor(B), torch.tensor(A), 0.5, symmetric=False)
    both = info_nce(torch.tensor(A), torch.tensor(B), 0.5, symmetric=True)
    assert forward.item() != pytest.approx(backward.item())
    assert both.item() == pytest.approx((forward.item() + backward.item()) / 2, rel=1e-6)


def test_every_caption_of_the_same_image_is_a_positive():
    ids = [7, 7, 9]  # rows 0 and 1: two captions of one image
    got = info_nce(torch.tensor(A), torch.tensor(B), 0.5, ids=torch.tensor(ids))
    assert got.item() == pytest.approx(_reference(A, B, 0.5, True, ids=ids), rel=1e-6)
    exact = info_nce(torch.tensor(A), torch.tensor(B), 0.5)
    assert got.item() != pytest.approx(exact.item())


def test_learnable_temperature_gets_the_gradient_of_the_loss():
    log_t = torch.tensor([math.log(0.5)], requires_grad=True)
    loss = info_nce(torch.tensor(A), torch.tensor(B), log_t.exp().reshape(()))
    loss.backward()
    eps = 1e-3
    up = info_nce(torch.tensor(A), torch.tensor(B), math.exp(math.log(0.5) + eps)).item()
    down = info_nce(torch.tensor(A), torch.tensor(B), math.exp(math.log(0.5) - eps)).item()
    assert log_t.grad.item() == pytest.approx((up - down) / (2 * eps), rel=1e-3)


def test_gradient_matches_finite_differences():
    a = torch.tensor(A, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(B, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: info_nce(x, y, 0.3).double(), (a, b))


def test_scale_gradient_keeps_the_value_and_scales_the_gradient():
    x = torch.tensor([3.0], requires_grad=True)
    y = scale_gradient(x * x, 4)
    y.backward()
    assert y.item() == 9.0 and x.grad.item() == 4 * 6.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="one shape"):
        info_nce(torch.zeros(3, 2), torch.zeros(3, 4), 0.1)
    with pytest.raises(ValueError, match="no negatives"):
        info_nce(torch.ones(1, 2), torch.ones(1, 2), 0.1)
    with pytest.raises(ValueError, match="same number of rows"):
        info_nce(torch.ones(2, 2), torch.ones(2, 2), 0.1, gather=lambda t: t, rank=0, world_size=2)


# ---------------------------------------------------------------------- 2 real ranks


def _full_batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g), torch.tensor([0, 0, 1, 2, 3, 3, 4, 5])


def _one_rank_reference(symmetric, by_image):
    """Loss and gradients w.r.t. a linear layer's weight with the whole batch in one process."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 5)
    x, y, ids = _full_batch()
    loss = info_nce(layer(x), y, 0.2, symmetric=symmetric, ids=ids if by_image else None)
    loss.backward()
    return loss.item(), layer.weight.grad.clone()


def _rank_worker(rank, world_size, symmetric, by_image):
    from textgan.runtime import Runtime

    runtime = Runtime.from_env()
    runtime.init_distributed(backend="gloo")
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 5)
    x, y, ids = _full_batch()
    n = x.shape[0] // world_size
    rows = slice(rank * n, (rank + 1) * n)
    loss = info_nce(layer(x[rows]), y[rows], 0.2, symmetric=symmetric, ids=ids[rows] if by_image else None,
                    gather=runtime.all_gather_tensor, rank=rank, world_size=world_size)
    loss.backward()
    grad = runtime.all_reduce_mean(layer.weight.grad)  # what a data-parallel engine does
    return loss.item(), grad


@pytest.mark.multiproc
@pytest.mark.parametrize("symmetric,by_image", [(True, False), (False, True)])
def test_two_ranks_equal_one_rank_holding_the_whole_batch(tmp_path, symmetric, by_image):
    expected_loss, expected_grad = _one_rank_reference(symmetric, by_image)
    results = run_ranks(_rank_worker, tmp_path, world_size=2, args=(symmetric, by_image))
    for loss, grad in results:
        assert loss == pytest.approx(expected_loss, rel=1e-6)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_without_gather_each_rank_sees_only_its_own_negatives():
    x, y, _ = _full_batch()
    local = info_nce(x[:4], y[:4], 0.2)
    assert local.item() == pytest.approx(_reference(x[:4].tolist(), y[:4].tolist(), 0.2, True), rel=1e-5)
    assert local.item() != pytest.approx(info_nce(x, y, 0.2).item())
