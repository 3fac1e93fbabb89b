"""The text condition c: L2-normalized CLIP text embeddings of the batch's captions.

Read from the shards when the builder precomputed them with the very same text tower (checked
by identity, never assumed), otherwise computed by the frozen tower from the batch's own captions.

Deliberately no cache across batches: on the CPU a caption's embedding differs in the last bits
depending on which other captions share its forward pass (4.8e-7 measured), so a cache filled in
history-dependent groups would make a resumed run diverge from the uninterrupted one. Encoding
each batch as a group is a pure function of the batch, which the loader reproduces exactly.
"""

import torch
import torch.nn.functional as F

from textgan.data.features import check_features_identity
from textgan.encoders import load_clip
from textgan.errors import UsageError

RANDOM_TOWER_SEED = 0  # random-weight towers must be identical on every rank and after a resume


def load_text_tower(te_cfg, device):
    """The frozen ClipTower of a config's text_encoder section: the one way to build it, so that training,
    evaluation and generation (textgan.infer) embed a caption with the very same weights.

    Seeded under a forked RNG: random weights (the demo) are then the same on every rank, every attempt
    and in every later process that loads the run, and the caller's RNG streams are left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_TOWER_SEED)
        return load_clip(te_cfg.model, te_cfg.pretrained, allow_random=te_cfg.random_weights, device=device)


def embed_texts(tower, captions) -> torch.Tensor:
    """[N, dim] L2-normalized fp32 embeddings of `captions`, computed in one forward pass (on the CPU
    the last bits depend on which captions share it: see the module docstring)."""
    return F.normalize(tower.encode_texts(list(captions)).float(), dim=1)


class TextConditioner:
    def __init__(self, te_cfg, manifest: dict, device):
        self.tower = load_text_tower(te_cfg, device)
        self.dim = self.tower.dim
        self.device = device
        shard_features = (manifest.get("settings") or {}).get("features") or {}
        self.precomputed = False
        if shard_features.get("clip") is not None and not self.tower.identity.get("random_weights"):
            try:
                check_features_identity(shard_features, {"clip": self.tower.identity, "perceptual": None})
                self.precomputed = True
            except UsageError:
                self.precomputed = False  # made with another tower: compute on the fly instead

    @property
    def identity(self) -> dict:
        return self.tower.identity

    @torch.no_grad()
    def encode(self, captions) -> torch.Tensor:
        """[N, dim] normalized embeddings on the conditioner's device."""
        unique = list(dict.fromkeys(captions))  # order of first appearance: deterministic per batch
        embeddings = embed_texts(self.tower, unique)
        index = {caption: i for i, caption in enumerate(unique)}
        return embeddings[[index[c] for c in captions]].to(self.device)

    def __call__(self, batch: dict) -> torch.Tensor:
        if self.precomputed and "clip_txt" in batch:
            return F.normalize(batch["clip_txt"].float(), dim=1).to(self.device)
        return self.encode(batch["caption"])

    def alt(self, batch: dict) -> torch.Tensor:
        """Embeddings of each sample's other caption (caption_alt: heterologous pairs)."""
        if self.precomputed and "clip_txt_alt" in batch:
            return F.normalize(batch["clip_txt_alt"].float(), dim=1).to(self.device)
        return self.encode(batch["caption_alt"])
