"""The text condition c: L2-normalized CLIP text embeddings of the batch's captions.

Read from the shards when the builder precomputed them with the very same text tower (checked
by identity, never assumed), otherwise computed by the frozen tower and cached per caption:
captions repeat (COCO has ~5 per image, the shapes data a small vocabulary), the tower does not
change, so each distinct caption is encoded once per process.
"""

import torch
import torch.nn.functional as F

from textgan.data.features import check_features_identity
from textgan.encoders import load_clip
from textgan.errors import UsageError

RANDOM_TOWER_SEED = 0  # random-weight towers must be identical on every rank and after a resume


class TextConditioner:
    def __init__(self, te_cfg, manifest: dict, device, cache_size: int = 200_000):
        # Seeded under a forked RNG: random weights (the demo) are then the same on every rank and
        # every attempt, and the training RNG streams are left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_TOWER_SEED)
            self.tower = load_clip(te_cfg.model, te_cfg.pretrained, allow_random=te_cfg.random_weights, device=device)
        self.dim = self.tower.dim
        self.device = device
        self.cache_size = cache_size
        self._cache = {}
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
        missing = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if missing:
            if len(self._cache) + len(missing) > self.cache_size:
                self._cache.clear()  # simple bound; a rebuild costs one encode per caption
            embeddings = F.normalize(self.tower.encode_texts(missing).float(), dim=1).cpu()
            self._cache.update(zip(missing, embeddings))
        return torch.stack([self._cache[c] for c in captions]).to(self.device)

    def __call__(self, batch: dict) -> torch.Tensor:
        if self.precomputed and "clip_txt" in batch:
            return F.normalize(batch["clip_txt"].float(), dim=1).to(self.device)
        return self.encode(batch["caption"])
