"""Which wrong caption the matching-aware D term pairs with each real image (loss.matching_negatives).

roll: the next sample's caption (c rolled by one), as GAN-CLS (Reed et al. 2016): a random other caption.
With captions that differ in many words, D can reject such a pair from any one of them, so it never has
to check the rest: on the shapes demo a random caption almost always names another first object, and D
learns little about the second.
nearest: for each sample, the other caption of the batch whose embedding is closest to its own (cosine)
while not being the same caption: the wrong caption that is hardest to tell apart, so D must check
every part of the text (hard negative mining, as in retrieval losses).
"""
from __future__ import annotations

import torch

NEGATIVES = ("roll", "nearest")
# Captions whose embeddings have cosine >= this are one caption (the text encoder is deterministic; a
# batched forward may still differ in the last bits): never each other's negative.
SAME_CAPTION_COSINE = 0.9999


def check_negatives(negatives: str) -> str:
    if negatives not in NEGATIVES:
        raise ValueError(f"loss.matching_negatives must be one of {', '.join(NEGATIVES)}; got {negatives!r}.")
    return negatives


def mismatched_captions(c: torch.Tensor, negatives: str = "roll") -> torch.Tensor:
    """[N, C] caption embeddings -> [N, C]: row i is another sample's caption, chosen by `negatives`.
    nearest: a row with no different caption in the batch keeps roll's choice (it has no wrong caption
    to offer; roll gives the same one)."""
    check_negatives(negatives)
    if c.shape[0] < 2:
        raise ValueError("loss.matching_aware needs >= 2 samples per batch to mismatch captions.")
    rolled = torch.roll(c, shifts=1, dims=0)
    if negatives == "roll":
        return rolled
    with torch.no_grad():  # a choice of rows: no gradient flows through the choosing
        unit = torch.nn.functional.normalize(c.detach().float(), dim=1)
        cosine = unit @ unit.T
        candidates = cosine < SAME_CAPTION_COSINE  # also excludes the diagonal
        nearest = cosine.masked_fill(~candidates, float("-inf")).argmax(dim=1)
        fallback = torch.roll(torch.arange(c.shape[0], device=c.device), shifts=1)
        index = torch.where(candidates.any(dim=1), nearest, fallback)
    return c[index]
