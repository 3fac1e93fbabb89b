"""The `metrics:` section of the training config: its schema (MetricsConfig), allowed ranges, and the
grammar of metric names.

It lives beside textgan/config.py, not in textgan/metrics/, because the config must validate every
section (a bad metric name or range fails `--dry-run`, before a job is submitted) while importing no
room above it; textgan.metrics imports these definitions from here. Standard library + errors/ranges
only, so checking a config never imports torch.

Metric names say everything that changes the number:

    counts are N or Nk: fid500, fid10k, fid30k (COCO-2014 protocol), fid50k
    fid10k        FID, 10 000 samples, captions + reference images from the val reference shards
    fid10k_train  the same against the TRAINING shards (named differently on purpose: Lafite's
                  "COCO FID" was of this kind and is not comparable to a val2014 FID)
    kid10k, is10k                      KID and Inception Score (IS uses the reference only for captions)
    clip_score, clip_score1k           100 * max(cos(CLIP(image), CLIP(caption)), 0), averaged
    diversity                          mean MS-SSIM among samples of one caption (lower = more diverse)
    shapes_alignment, shapes_alignment1k   textgan.metrics.alignment on captioned-shapes data
Names without a count use MetricsConfig.num_samples (diversity: diversity_captions x diversity_samples).
"""

import re
from dataclasses import dataclass, field
from typing import List, Optional

from textgan.errors import UsageError
from textgan.ranges import at_least, between, check_range

# torch-fidelity's name for its TF-ported InceptionV3 (the one every published FID uses).
INCEPTION = "inception-v3-compat"


@dataclass
class MetricsConfig:
    # Metric names (the grammar below): fid10k, fid30k, kid10k, is10k, fid10k_train, clip_score,
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


# kind -> (needs a count in the name, higher is better)
KINDS = {
    "fid": (True, False),
    "kid": (True, False),
    "is": (True, True),
    "clip_score": (False, True),
    "diversity": (False, False),
    "shapes_alignment": (False, True),
}
FIDELITY_KINDS = ("fid", "kid", "is")  # computed from torch-fidelity features of one shared generation
_NAME = re.compile(r"^(fid|kid|is|clip_score|shapes_alignment|diversity)(?:(\d+)(k?))?(_train)?$")
EXAMPLES = "fid10k, fid30k, kid10k, is10k, fid10k_train, clip_score, clip_score1k, diversity, shapes_alignment"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str
    count: Optional[int]  # None: from the config
    reference: str  # "val" (MetricsConfig.reference) or "train" (the training shards)

    @property
    def higher_is_better(self) -> bool:
        return KINDS[self.kind][1]

    def better(self, value: float, best: Optional[float]) -> bool:
        """Is `value` an improvement over `best` (None: nothing yet)?"""
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best


def parse_metric(name: str) -> MetricSpec:
    """MetricSpec of a name; UsageError with the grammar and examples for anything else."""
    match = _NAME.match(str(name).strip())
    if not match:
        raise UsageError(f"unknown metric {name!r}; metrics are named like {EXAMPLES} "
                         "(fid/kid/is need a sample count: fid500, fid10k; _train = against the training shards)")
    kind, digits, thousands, train = match.groups()
    needs_count = KINDS[kind][0]
    if kind == "diversity" and digits:
        raise UsageError(f"metric {name!r}: diversity takes no count; set metrics.diversity_captions and "
                         "metrics.diversity_samples")
    if needs_count and not digits:
        raise UsageError(f"metric {name!r} needs a sample count in its name (e.g. {kind}10k or {kind}500): the "
                         "count changes the value, so it is part of the name")
    count = int(digits) * (1000 if thousands else 1) if digits else None
    if count == 0:
        raise UsageError(f"metric {name!r}: the sample count must be >= 1")
    return MetricSpec(name=match.group(0), kind=kind, count=count, reference="train" if train else "val")


def parse_metrics(names) -> list:
    """Specs of a list (or comma-separated string) of names, duplicates refused."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    specs = [parse_metric(n) for n in names]
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise UsageError(f"metric {spec.name!r} is listed twice")
        seen.add(spec.name)
    return specs


def validate_metrics_config(cfg, prefix: str = "metrics") -> None:
    """UsageError naming the key for values no metric can work with (names are checked by parse_metrics)."""
    parse_metrics(cfg.metrics)
    for key, allowed in METRICS_RANGES.items():
        check_range(f"{prefix}.{key}", getattr(cfg, key), allowed)
    sha256 = cfg.feature_extractor_sha256
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha256)):
        raise UsageError(f"{prefix}.feature_extractor_sha256 must be the 64 hex digits of the weights file's sha256 "
                         f"(sha256sum FILE), got {sha256!r}")
