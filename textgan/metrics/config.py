"""MetricsConfig: what to measure, against what, with which weights (the `metrics:` section of TrainConfig).

Plain dataclass with OmegaConf-compatible field types, so TrainConfig can hold it as
`metrics: MetricsConfig = field(default_factory=MetricsConfig)` and YAML / `--set metrics.x=y` work.
`validate_metrics_config` gives errors that name the key (call it from textgan.config.validate).
"""

import os
import re
from dataclasses import dataclass, field
from typing import List, Optional

from textgan.errors import UsageError
from textgan.ranges import at_least, between, check_range

# torch-fidelity's name for its TF-ported InceptionV3 (the one every published FID uses).
INCEPTION = "inception-v3-compat"


@dataclass
class MetricsConfig:
    # Metric names (textgan.metrics.registry): fid10k, fid30k, kid10k, is10k, fid10k_train, clip_score,
    # clip_score1k, diversity, shapes_alignment... Empty: no metrics during training.
    metrics: List[str] = field(default_factory=list)
    metrics_ticks: int = 50  # evaluate every this many ticks (0: never during training; `textgan eval` still works)
    # Reference shards for the "val" metrics (COCO val2014 built exactly like the training shards).
    # Metrics named *_train use the training shards (data.shards) instead.
    reference: Optional[str] = None
    train_shards: Optional[str] = None  # for the leakage check and *_train metrics; None: data.shards
    num_samples: int = 10000  # sample count of metrics whose name carries none (clip_score, shapes_alignment)
    caption_seed: int = 0  # picks the reference images (one caption each) and the fixed latents
    # torch-fidelity feature extractor for FID/KID/IS, and its local weights file. None for the default
    # InceptionV3: $TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth (never downloaded).
    feature_extractor: str = INCEPTION
    feature_extractor_weights: Optional[str] = None
    # sha256 of that file (64 hex digits), checked before loading. Needed for a file that is more than
    # tensors (torch-fidelity unpickles it in full); None: it must hold only tensors.
    feature_extractor_sha256: Optional[str] = None
    kid_subsets: int = 100
    kid_subset_size: int = 1000  # lowered to the sample count for small sets (recorded in the protocol)
    isc_splits: int = 10
    # open_clip model for clip_score; pretrained: a tag whose weights are in the HF cache, or a local file.
    clip_model: str = "ViT-B-32-quickgelu"
    clip_pretrained: Optional[str] = "openai"
    diversity_captions: int = 100  # diversity: this many captions ...
    diversity_samples: int = 4  # ... times this many latents each; MS-SSIM over the pairs of one caption
    cache_dir: Optional[str] = None  # real-image statistics; None: $XDG_CACHE_HOME/textgan/metrics
    allow_overlap: bool = False  # run "val" metrics even when reference images are in the training shards
    batch_size: int = 64  # images per generator / feature-extractor forward, per rank


# The allowed range of every numeric key of MetricsConfig (textgan.config.RANGES holds the other sections').
METRICS_RANGES = {
    "metrics_ticks": at_least(0, "0: no metrics during training"),
    "num_samples": at_least(1),
    "caption_seed": between(0, 2**32 - 1),
    "kid_subsets": at_least(1),
    "kid_subset_size": at_least(1),
    "isc_splits": at_least(1),
    "diversity_captions": at_least(1),
    "diversity_samples": at_least(2, "diversity compares samples of one caption"),
    "batch_size": at_least(1),
}


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "textgan", "metrics")


def cache_dir_of(cfg) -> str:
    return os.path.abspath(os.path.expanduser(cfg.cache_dir)) if cfg.cache_dir else default_cache_dir()


def validate_metrics_config(cfg, prefix: str = "metrics") -> None:
    """UsageError naming the key for values no metric can work with (names are checked by parse_metrics)."""
    from textgan.metrics.registry import parse_metrics

    parse_metrics(cfg.metrics)
    for key, allowed in METRICS_RANGES.items():
        check_range(f"{prefix}.{key}", getattr(cfg, key), allowed)
    sha256 = cfg.feature_extractor_sha256
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha256)):
        raise UsageError(f"{prefix}.feature_extractor_sha256 must be the 64 hex digits of the weights file's sha256 "
                         f"(sha256sum FILE), got {sha256!r}")
