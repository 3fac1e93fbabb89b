"""Fitting the networks' ConditionNorm (model.c_norm) on the training captions, once, at the start of a run.

The caption set is the first FIT_CAPTIONS samples of the training shards in file order (one caption each,
the one evaluation picks), embedded by the run's own text conditioner (precomputed shard features when the
tower matches). Rank 0 embeds them and broadcasts, so every rank fits exactly the same statistics; G, G_ema
and D then carry them as buffers in every checkpoint and export (a resumed run loads the saved ones).
"""

import torch

from textgan.data.loading.loader import eval_loader
from textgan.nets.condition_norm import condition_norms

FIT_CAPTIONS = 4096
BATCH = 256


def caption_embeddings(shards: str, text, limit: int = FIT_CAPTIONS) -> torch.Tensor:
    """[N, c_dim] embeddings of the first `limit` samples' captions (N = min(limit, samples))."""
    out, count = [], 0
    for batch in eval_loader(shards, BATCH, num_workers=0):
        out.append(text(batch).float().cpu())
        count += out[-1].shape[0]
        if count >= limit:
            break
    if not out:
        raise FileNotFoundError(f"no readable sample in data.shards={shards} to fit model.c_norm on: every shard is "
                                "missing or damaged (see the loader's lines above); restore or rebuild the shards")
    return torch.cat(out)[:limit]


def fit_condition_norms(cfg, runtime, networks, text) -> int:
    """Fit every ConditionNorm in `networks` (unfitted ones only: weights loaded with --init-from keep
    theirs); the number fitted."""
    norms = [m for m in condition_norms(*networks) if not bool(m.fitted)]
    if not norms:
        return 0
    if text is None:
        raise ValueError("model.c_norm needs the text conditioner (build_training without c_dim=)")
    c_dim = norms[0].mean.shape[0]
    if runtime.is_main:
        samples = caption_embeddings(cfg.data.shards, text).to(runtime.device)
        count = torch.tensor([samples.shape[0]], device=runtime.device)
    else:
        count = torch.zeros([1], dtype=torch.long, device=runtime.device)
    count = runtime.broadcast_(count)
    if not runtime.is_main:
        samples = torch.zeros([int(count.item()), c_dim], device=runtime.device)
    samples = runtime.broadcast_(samples)
    for norm in norms:
        norm.fit(samples)
    return len(norms)
