"""Adversarial losses, per sample: each function maps D's logits [N] (or [N, 1]) to losses [N].

Two families, chosen by `kind` (config key `loss.kind`):

* "nonsaturating" (StyleGAN2's logistic loss; Goodfellow et al. 2014, the non-saturating G form):
      D on reals:  softplus(-x) = -log(sigmoid(x))
      D on fakes:  softplus(x)  = -log(1 - sigmoid(x))
      G on fakes:  softplus(-x) = -log(sigmoid(x))
  G's form does not saturate when D confidently rejects the fakes (its gradient stays ~1 there).
* "hinge" (Lim & Ye 2017; SAGAN, BigGAN):
      D on reals:  relu(1 - x)
      D on fakes:  relu(1 + x)
      G on fakes:  -x

The caller takes the mean (or weights samples first); nothing here reduces.
"""

import torch
import torch.nn.functional as F

KINDS = ("nonsaturating", "hinge")


def _flat(logits: torch.Tensor) -> torch.Tensor:
    """D returns [N, 1]; losses are per sample [N]."""
    if logits.ndim == 2 and logits.shape[1] == 1:
        return logits[:, 0]
    if logits.ndim != 1:
        raise ValueError(f"D's logits must have shape [N] or [N, 1], got {list(logits.shape)}.")
    return logits


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown adversarial loss kind {kind!r} (config key 'loss.kind'); use one of {KINDS}.")
    return kind


def d_loss_real(logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """D's loss on real images: softplus(-x) (nonsaturating) or relu(1 - x) (hinge). Shape [N]."""
    x = _flat(logits)
    return F.softplus(-x) if check_kind(kind) == "nonsaturating" else F.relu(1.0 - x)


def d_loss_fake(logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """D's loss on fake (or mismatched) images: softplus(x) (nonsaturating) or relu(1 + x) (hinge). [N]."""
    x = _flat(logits)
    return F.softplus(x) if check_kind(kind) == "nonsaturating" else F.relu(1.0 + x)


def g_loss(logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """G's loss on its fakes as D scores them: softplus(-x) (nonsaturating) or -x (hinge). Shape [N]."""
    x = _flat(logits)
    return F.softplus(-x) if check_kind(kind) == "nonsaturating" else -x
