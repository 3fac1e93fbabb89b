"""CLIP score: how well generated images match their captions, by a frozen open_clip model.

    score(image, caption) = 100 * max(cos(CLIP_image(image), CLIP_text(caption)), 0)

averaged over the samples (the definition of torchmetrics' CLIPScore and of most text-to-image papers;
Hessel et al.'s CLIPScore is 2.5/100 of it). Images go through textgan.encoders.ClipTower, which resizes
and normalizes exactly like open_clip's own preprocessing; the model (ViT-B/32 vs ViT-L/14@336px...)
changes the number, so its identity is part of the protocol.
"""

import numpy as np
import torch
import torch.nn.functional as F

from textgan.metrics.generation import from_uint8


def clip_score_from_embeddings(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """[N] scores of row-aligned embedding pairs (any scale; they are normalized here)."""
    cosine = (F.normalize(image_embeddings.float(), dim=1) * F.normalize(text_embeddings.float(), dim=1)).sum(1)
    return 100.0 * cosine.clamp(min=0)


@torch.no_grad()
def clip_scores(tower, images_uint8, captions) -> np.ndarray:
    """float64 [N] scores of uint8 [N, 3, H, W] images with their N captions."""
    captions = list(captions)
    if len(captions) != len(images_uint8):
        raise ValueError(f"{len(images_uint8)} images but {len(captions)} captions")
    images = from_uint8(images_uint8).to(tower.device)
    scores = clip_score_from_embeddings(tower.encode_images(images), tower.encode_texts(captions))
    return scores.double().cpu().numpy()
