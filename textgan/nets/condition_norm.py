"""Normalising the text condition c over the caption set, before a network embeds it.

Text embeddings are anisotropic: L2-normalised CLIP text embeddings of one dataset's captions share a large
common component (cosine 0.65-0.9 between the demo tower's captions), so after a network's own scaling
(normalize_2nd_moment) most of c's energy says "a caption" and little says which one. A cGAN's batch norm
removes that common part by itself; StyleGAN2's mapping network (lr multiplier 0.01) and D's projection
(cmap) do not. ConditionNorm subtracts the caption set's mean ("center") and, for "whiten", also equalises
the variance of every direction (ZCA: (c - mean) @ V diag(1/sqrt(lambda + eps lambda_max)) V^T).

The statistics are buffers of the network, fitted once at the start of a new run from the training captions
(textgan.train.condition_stats) and then saved in every checkpoint and export with the weights: a generator
loaded anywhere sees c exactly as in training.
"""

import torch
from torch import nn

MODES = ("none", "center", "whiten")
WHITEN_EPS = 1e-3  # relative to the largest eigenvalue: directions the captions barely use are not blown up


class ConditionNorm(nn.Module):
    def __init__(self, c_dim: int, mode: str):
        super().__init__()
        if mode not in MODES[1:]:
            raise ValueError(f"ConditionNorm mode must be one of {MODES[1:]}, got {mode!r}")
        self.mode = mode
        self.register_buffer("mean", torch.zeros([c_dim]))
        self.register_buffer("transform", torch.eye(c_dim))
        self.register_buffer("fitted", torch.zeros([], dtype=torch.bool))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        x = c - self.mean.to(c.dtype)
        return x @ self.transform.to(c.dtype) if self.mode == "whiten" else x

    @torch.no_grad()
    def fit(self, samples: torch.Tensor) -> None:
        """Set the statistics from c samples [N, c_dim] (the caption set's embeddings), in float64."""
        x = samples.detach().double().cpu()
        mean = x.mean(dim=0)
        self.mean.copy_(mean.to(self.mean.dtype))
        if self.mode == "whiten":
            centered = x - mean
            cov = centered.T @ centered / max(1, x.shape[0] - 1)
            eigenvalues, vectors = torch.linalg.eigh(cov)
            eigenvalues = eigenvalues.clamp(min=0)
            if eigenvalues.max() > (torch.finfo(torch.float32).eps * x.abs().max()) ** 2:
                scale = (eigenvalues + WHITEN_EPS * eigenvalues.max()).rsqrt()
                self.transform.copy_((vectors * scale) @ vectors.T)
            else:  # one point (a single caption, or identical ones up to float32 rounding): centre only
                self.transform.copy_(torch.eye(x.shape[1]))
        self.fitted.fill_(True)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, c_dim={self.mean.shape[0]}"


def condition_norms(*networks) -> list:
    """Every ConditionNorm inside `networks` (G, D, G_ema): training fits them all from the same captions."""
    return [m for net in networks for m in net.modules() if isinstance(m, ConditionNorm)]
