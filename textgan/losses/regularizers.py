"""Regularizers as pure functions of tensors and modules (no optimizer, no backward, no ranks).

* r1_penalty: Mescheder et al. 2018, gradient penalty on real data only; StyleGAN2 applies it lazily.
  R2, the same zero-centered penalty on fake data (R3GAN pairs it with R1), is this function applied to fakes.
* path_length_penalty: StyleGAN2's path-length regularization (Karras et al. 2020, eq. 4).
* orthogonal_penalty: BigGAN's modified orthogonal regularization (Brock et al. 2019, eq. 3).
* l2_penalty: weight decay written as a loss term.

Weight selection for the last two: parameters named `*weight` with two or more dimensions (linear and
conv kernels, including equalized-lr layers that store their own `weight`); biases, constants and
noise strengths are left alone, as weight decay conventionally does.
"""

import math
from typing import Callable, Iterable, Iterator, Optional, Tuple

import torch
from torch import nn


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 = ||d sum(D(x)) / d x||^2 per sample: [N].

    `real_images` must be the leaf the logits were computed from (requires_grad=True). The gradient is
    taken with create_graph=True so that the penalty itself can be backpropagated into D's weights.
    The logits are summed before differentiating, as StyleGAN2 does: one backward gives every sample's
    gradient because each logit depends on its own image (minibatch-stddev adds a small cross-term)."""
    if not real_images.requires_grad:
        raise ValueError("r1_penalty: real_images must require grad; call .detach().requires_grad_(True) first.")
    (grads,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grads.square().flatten(1).sum(1)


def path_length_penalty(
    images: torch.Tensor,
    ws: torch.Tensor,
    pl_mean,
    pl_decay: float,
    generator: Optional[torch.Generator] = None,
    mean_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """StyleGAN2's path-length penalty. Returns (penalty [N], new_pl_mean, pl_lengths [N] detached).

    y = random normal image-space noise / sqrt(H * W)   (so the length does not depend on resolution)
    g = d sum(images * y) / d ws                          (= J^T y, one vector-Jacobian product)
    pl_lengths = sqrt(mean over the style layers of sum over w_dim of g^2)
    new_pl_mean = pl_mean + pl_decay * (mean(pl_lengths) - pl_mean)   (an EMA; pl_mean is not mutated)
    penalty = (pl_lengths - new_pl_mean)^2

    `ws` is [N, w_dim] or [N, num_ws, w_dim] and must be in the graph that produced `images`.
    `mean_fn`, if given, turns the local batch mean of the lengths into the mean across ranks (the
    caller's all-reduce), so that every rank keeps the same pl_mean and a checkpoint from rank 0 resumes
    every rank exactly. The objective stays free of torch.distributed: the loop passes the function."""
    if not ws.requires_grad:
        raise ValueError("path_length_penalty: ws must be part of the graph that produced images (requires grad).")
    height, width = images.shape[-2:]
    device = generator.device if generator is not None else images.device
    noise = torch.randn(images.shape, generator=generator, device=device, dtype=images.dtype).to(images.device)
    noise = noise / math.sqrt(height * width)
    (grads,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
    squared = grads.square().sum(-1)  # [N] or [N, num_ws]
    pl_lengths = (squared.flatten(1).mean(1) if squared.ndim > 1 else squared).sqrt()
    batch_mean = pl_lengths.mean().detach()
    if mean_fn is not None:
        batch_mean = mean_fn(batch_mean)
    pl_mean = torch.as_tensor(pl_mean, dtype=pl_lengths.dtype, device=pl_lengths.device).detach()
    new_pl_mean = pl_mean + pl_decay * (batch_mean - pl_mean)
    penalty = (pl_lengths - new_pl_mean.reshape(-1)[0]).square()
    return penalty, new_pl_mean, pl_lengths.detach()


def _weights(module: nn.Module, exclude: Iterable[str], who: str) -> Iterator[Tuple[str, torch.Tensor]]:
    """(name, weight) for every linear/conv kernel whose name contains none of `exclude`."""
    exclude = tuple(exclude)
    found = False
    for name, param in module.named_parameters():
        if not name.endswith("weight") or any(part in name for part in exclude):
            continue
        if param.numel() == 0:
            # ZeRO-3 leaves an empty placeholder outside forward; a silent zero penalty would be wrong.
            raise ValueError(
                f"{who}: parameter '{name}' is empty (partitioned, e.g. by ZeRO-3). Gather the parameters "
                f"first, or use the optimizer's weight decay instead of a loss term."
            )
        if param.ndim >= 2:
            found = True
            yield name, param
    if not found:
        raise ValueError(f"{who}: {type(module).__name__} has no weight matrices or kernels to regularize.")


def orthogonal_penalty(module: nn.Module, exclude: Iterable[str] = ()) -> torch.Tensor:
    """BigGAN's orthogonal regularization: sum over kernels W (reshaped to [out, -1]) of
    ||W W^T ⊙ (1 - I)||_F^2, a scalar. Only the off-diagonal is penalized: filters are pushed
    toward orthogonality without constraining their norms. Names containing any string of `exclude`
    are skipped (BigGAN skips its shared class embedding).
    BigGAN's code adds strength * 2 (W W^T ⊙ (1 - I)) W to the gradient, which is the gradient of
    strength / 2 times this penalty: its beta = 1e-4 corresponds to loss.ortho_reg = 5e-5."""
    total = None
    for _, weight in _weights(module, exclude, "orthogonal_penalty"):
        w = weight.reshape(weight.shape[0], -1)
        gram = w @ w.t()
        off_diagonal = gram * (1.0 - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device))
        term = off_diagonal.square().sum()
        total = term if total is None else total + term
    return total


def l2_penalty(module: nn.Module, exclude: Iterable[str] = ()) -> torch.Tensor:
    """Sum of squared weights (kernels only, see the module docstring), a scalar. Adding
    weight_decay / 2 times this to the loss gives the gradient weight_decay * W, the same as
    torch.optim's `weight_decay` (coupled L2, not AdamW's decoupled decay)."""
    total = None
    for _, weight in _weights(module, exclude, "l2_penalty"):
        term = weight.square().sum()
        total = term if total is None else total + term
    return total
