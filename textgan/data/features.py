"""Precomputed per-sample features for the shards, and the check that they fit a run.

The builder calls FeatureExtractor.compute on the JPEG bytes it is about to store; the features
are computed from the *decoded stored JPEG* (decode_jpeg -> to_float_image) through the same
towers training uses (textgan.encoders), so features read from shards equal on-the-fly features
up to float16 rounding. Training calls check_features_identity before trusting them.
"""

import numpy as np
import torch

from textgan.data import format as fmt
from textgan.data.decode import decode_jpeg, to_float_image
from textgan.errors import UsageError


class FeatureExtractor:
    """Computes the enabled features (CLIP image/text, perceptual) for batches of samples."""

    def __init__(self, clip=None, perceptual=None, batch_size: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.clip = clip
        self.perceptual = perceptual
        self.batch_size = batch_size

    @property
    def enabled(self) -> bool:
        return self.clip is not None or self.perceptual is not None

    def identity(self) -> dict:
        """What made the features; stored as the manifest's settings["features"]."""
        return {
            "clip": dict(self.clip.identity) if self.clip is not None else None,
            "perceptual": dict(self.perceptual.identity) if self.perceptual is not None else None,
        }

    def compute(self, jpegs: list, captions: list) -> list:
        """One dict per sample: {KEY_CLIP_IMG: f16 [D], KEY_CLIP_TXT: f16 [n_captions, D],
        KEY_PERCEPTUAL: f16 [F]}, only the enabled keys (empty dicts when nothing is enabled)."""
        if len(jpegs) != len(captions):
            raise ValueError(f"{len(jpegs)} images but {len(captions)} caption lists")
        results = [{} for _ in jpegs]
        if not self.enabled:
            return results
        with torch.no_grad():
            for start in range(0, len(jpegs), self.batch_size):
                stop = min(start + self.batch_size, len(jpegs))
                self._compute_batch(jpegs[start:stop], captions[start:stop], results[start:stop])
        return results

    def _compute_batch(self, jpegs, captions, out) -> None:
        pixels = [decode_jpeg(data) for data in jpegs]
        for tower, key in ((self.clip, fmt.KEY_CLIP_IMG), (self.perceptual, fmt.KEY_PERCEPTUAL)):
            if tower is None:
                continue
            # The builder stores one resolution, but stack only same-sized images to be safe.
            by_shape = {}
            for i, p in enumerate(pixels):
                by_shape.setdefault(p.shape, []).append(i)
            for indices in by_shape.values():
                images = to_float_image(np.stack([pixels[i] for i in indices]))
                features = _to_float16(tower.encode_images(images), key)
                for row, i in zip(features, indices):
                    out[i][key] = row
        if self.clip is not None:
            # All captions of the batch in one text forward, then split back per sample.
            flat = [c for sample in captions for c in sample]
            rows = _to_float16(self.clip.encode_texts(flat), fmt.KEY_CLIP_TXT) if flat else None
            offset = 0
            for i, sample in enumerate(captions):
                n = len(sample)
                out[i][fmt.KEY_CLIP_TXT] = (
                    rows[offset : offset + n] if rows is not None else np.zeros((0, self.clip.dim), np.float16)
                )
                offset += n


def _to_float16(features: torch.Tensor, key: str) -> np.ndarray:
    array = features.detach().float().cpu().numpy().astype(np.float16)
    if not np.isfinite(array).all():
        # float16 overflows at 65504; storing inf would silently poison training.
        raise ValueError(f"{key}: features are not finite in float16 (max |x| {features.abs().max().item():.4g})")
    return array


def _describe(kind: str, identity: dict) -> str:
    model = identity.get("model") if kind == "clip" else identity.get("arch")
    source = identity.get("pretrained") if kind == "clip" else identity.get("weights")
    if identity.get("random_weights"):
        weights = "random weights"
    elif identity.get("weights_sha256"):
        weights = f"weights file {source} (sha256 {identity['weights_sha256'][:12]}...)"
    else:
        weights = f"pretrained tag {source!r}"
    size = f" at {_perceptual_size(identity)} px" if kind == "perceptual" else ""
    return f"{kind} model {model!r}{size} with {weights}"


def _perceptual_size(identity: dict) -> int:
    # Shards made before the size was an option were all made at the one size there was (ImageNet's 224).
    return int(identity.get("input_size", 224))


def _same_features(kind: str, made: dict, expected: dict) -> bool:
    model_key, source_key = ("model", "pretrained") if kind == "clip" else ("arch", "weights")
    if made.get(model_key) != expected.get(model_key) or made.get("dim") != expected.get("dim"):
        return False
    if kind == "perceptual" and _perceptual_size(made) != _perceptual_size(expected):
        return False
    if made.get("random_weights") or expected.get("random_weights"):
        # Random initializations are not recorded, so such features can never be reproduced.
        return False
    if made.get("weights_sha256") or expected.get("weights_sha256"):
        # Local files: the content counts, not where the file lives on each machine.
        return made.get("weights_sha256") == expected.get("weights_sha256")
    return made.get(source_key) == expected.get(source_key)


def check_features_identity(manifest_features, expected: dict) -> None:
    """Refuse precomputed features that a run cannot use as its own on-the-fly features.

    manifest_features: the manifest's settings["features"] ({"clip": identity | None,
    "perceptual": identity | None}, or None for shards built without features).
    expected: the same shape (FeatureExtractor.identity() of the run's towers); a kind that is None
    there is not used by the run and not checked. A kind the run uses must be present in the
    shards and made with the same model and the same weights (sha256 for local files, tag
    otherwise; random weights never match).
    """
    manifest_features = manifest_features or {}
    problems = []
    for kind in ("clip", "perceptual"):
        want = (expected or {}).get(kind)
        if want is None:
            continue
        made = manifest_features.get(kind)
        if made is None:
            problems.append(
                f"the shards have no precomputed {kind} features, but this run uses {_describe(kind, want)}"
            )
        elif not _same_features(kind, made, want):
            problems.append(
                f"precomputed {kind} features in the shards were made with {_describe(kind, made)}, "
                f"but this run uses {_describe(kind, want)}"
            )
    if problems:
        raise UsageError(
            "; ".join(problems) + ". Rebuild the shards with the run's feature model and weights, "
            "point the run at the same model and weights, or compute features on the fly instead."
        )
