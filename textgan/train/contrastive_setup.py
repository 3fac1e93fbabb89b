"""Everything the contrastive terms need at run time, built once by the training loop.

    terms, real_source = build_contrastive(cfg, text, manifest, runtime)

terms: a ContrastiveTerms (None when every weight is 0: then nothing here is loaded or computed).
real_source: how real-image features are obtained per structure, from the shards (precomputed by
the shard builder with the very same model and weights, checked by identity) or on the fly with
the frozen tower, without gradient. contrastive.precomputed: auto (use them when they match),
require (refuse to start otherwise, with the reason), never (always on the fly).
"""

import torch

from textgan.data.features import check_features_identity
from textgan.encoders import load_perceptual
from textgan.errors import UsageError
from textgan.losses.contrastive_terms import ContrastiveTerms, term_weights
from textgan.train.text import RANDOM_TOWER_SEED

BATCH_KEYS = {"clip": "clip_img", "perceptual": "perceptual"}


class RealFeatureSource:
    """features(structure, batch, reals) -> [n, d] features of a micro-batch's real images."""

    def __init__(self, towers: dict, precomputed: set):
        self.towers = towers  # structure -> frozen tower (clip / perceptual)
        self.precomputed = precomputed  # structures read from the shards

    @torch.no_grad()
    def features(self, structure: str, batch: dict, reals: torch.Tensor) -> torch.Tensor:
        if structure in self.precomputed:
            return batch[BATCH_KEYS[structure]].to(reals.device, torch.float32)
        return self.towers[structure].encode_images(reals).float()


def _precomputed(cc, structures: list, towers: dict, manifest: dict) -> set:
    """The structures whose real-image features come from the shards."""
    if cc.precomputed == "never" or not structures:
        return set()
    made = (manifest.get("settings") or {}).get("features") or {}
    usable, problems = set(), []
    for structure in structures:
        try:
            check_features_identity(made, {structure: towers[structure].identity})
            usable.add(structure)
        except UsageError as e:
            problems.append(str(e))
    if cc.precomputed == "require" and problems:
        raise UsageError(
            "contrastive.precomputed=require, but the shards' features cannot be used: " + " ".join(problems)
            + " Or set contrastive.precomputed=auto to compute them on the fly."
        )
    return usable


def build_contrastive(cfg, text, manifest: dict, runtime):
    """(ContrastiveTerms, RealFeatureSource) for a run, or (None, None) when every weight is 0."""
    cc = cfg.contrastive
    weights = term_weights(cc)  # which terms are on: nothing is loaded for a term that is off
    if not any(weights.values()):
        return None, None
    towers = {"clip": text.tower}
    if weights["perceptual_ii"] > 0 or weights["perceptual_ii_het"] > 0:
        # Seeded apart from the training RNG: random weights (tests, demo) are the same on every rank.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_TOWER_SEED)
            towers["perceptual"] = load_perceptual(cc.perceptual, cc.perceptual_weights,
                                                   allow_random=cc.perceptual_random_weights, device=runtime.device,
                                                   input_size=cc.perceptual_size)
    real_structures = [s for s in ("clip", "perceptual") if weights[f"{s}_ii"] > 0]
    precomputed = _precomputed(cc, real_structures, towers, manifest)
    terms = ContrastiveTerms(cc, clip=towers["clip"], perceptual=towers.get("perceptual"),
                             gather=runtime.all_gather_tensor, rank=runtime.rank, world_size=runtime.world_size)
    return terms, RealFeatureSource(towers, precomputed)
