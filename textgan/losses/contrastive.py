"""InfoNCE between two sets of paired embeddings, with negatives from the whole global batch.

    loss = info_nce(a, b, temperature, symmetric=True, ids=None, gather=None, rank=0, world_size=1)

Row i of `a` and row i of `b` are a positive pair (a generated image and its caption, a generated
image and its real image...); every other row of the *global* batch is a negative. With `ids` (e.g.
the COCO image id of each row), every pair of rows with the same id counts as positive, the
supervised-contrastive form (Khosla et al. 2020): each row's loss is the mean of -log softmax over
its positives.

Temperature, done right: logits = cosine similarity / temperature, then cross-entropy. (Lafite's
loss documents that it multiplied where it should divide.) `temperature` may be a tensor with a
gradient (a learnable temperature, e.g. exp of a log-temperature parameter).

Distributed, without importing any distributed code: the caller passes `gather(t) -> [world * n, ...]`
(the rows of every rank in rank order, no gradient) and this rank's index. Every rank then builds the
full global logits matrix with its own rows carrying gradient, so the loss *value* equals what one
process holding the whole batch computes. Its gradient w.r.t. this rank's rows is exact, and a
data-parallel engine averages parameter gradients over ranks (dividing by world size), so the
gradient is scaled by world_size here (the value is unchanged): after the engine's averaging the
update equals the single-process one. The matrix is [world*n, world*n]: cheap next to any network.
"""

from typing import Callable, Optional

import torch
import torch.nn.functional as F


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x in the forward pass; gradient multiplied by `factor` in the backward pass."""
    if factor == 1:
        return x
    return x * factor - x.detach() * (factor - 1)


def _global(x: torch.Tensor, gather: Optional[Callable], rank: int, world_size: int) -> torch.Tensor:
    """All ranks' rows with this rank's slice replaced by `x` itself (so it keeps its gradient)."""
    if world_size == 1 or gather is None:
        return x
    everything = gather(x.detach())
    n = x.shape[0]
    if everything.shape[0] != n * world_size:
        raise ValueError(
            f"gather returned {everything.shape[0]} rows for {world_size} ranks x {n}: every rank must "
            "contribute the same number of rows"
        )
    return torch.cat([everything[: rank * n], x, everything[(rank + 1) * n:]])


def _cross_entropy(logits: torch.Tensor, positives: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean over rows of -log softmax at the positive column(s)."""
    if positives is None:
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))
    log_prob = F.log_softmax(logits, dim=1)
    per_row = -(log_prob * positives).sum(dim=1) / positives.sum(dim=1)
    return per_row.mean()


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature,
    symmetric: bool = True,
    ids: Optional[torch.Tensor] = None,
    gather: Optional[Callable] = None,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """Scalar InfoNCE of a [n, d] against b [n, d] (L2-normalized here), rows paired by index.

    symmetric: mean of the a->b and b->a directions (CLIP's loss); otherwise a->b only (each row of
    `a` picks its partner among all rows of `b`). ids: [n] integer labels; rows with equal labels
    are all positives of each other (they must then be gathered too, through the same `gather`)."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"info_nce needs two [n, d] tensors of one shape, got {list(a.shape)} and {list(b.shape)}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    dtype = torch.promote_types(a.dtype, torch.float32)  # at least fp32 (bf16/fp16 runs), fp64 stays
    a_all = _global(F.normalize(a.to(dtype), dim=1), gather, rank, world_size)
    b_all = _global(F.normalize(b.to(dtype), dim=1), gather, rank, world_size)
    if a_all.shape[0] < 2:
        raise ValueError("info_nce needs at least 2 rows in the global batch: with one there are no negatives")
    positives = None
    if ids is not None:
        ids_all = _global(ids.reshape(-1), gather, rank, world_size)
        positives = (ids_all[:, None] == ids_all[None, :]).float()
    logits = a_all @ b_all.t() / temperature
    loss = _cross_entropy(logits, positives)
    if symmetric:
        loss = (loss + _cross_entropy(logits.t(), None if positives is None else positives.t())) / 2
    return scale_gradient(loss, world_size if gather is not None else 1)
