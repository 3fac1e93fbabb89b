"""Metric names -> what to compute. Names say everything that changes the number:

    counts are N or Nk: fid500, fid10k, fid30k (COCO-2014 protocol), fid50k
    fid10k        FID, 10 000 samples, captions + reference images from the val reference shards
    fid10k_train  the same against the TRAINING shards (named differently on purpose: Lafite's
                  "COCO FID" was of this kind and is not comparable to a val2014 FID)
    kid10k, is10k                      KID and Inception Score (IS uses the reference only for captions)
    clip_score, clip_score1k           100 * max(cos(CLIP(image), CLIP(caption)), 0), averaged
    diversity                          mean MS-SSIM among samples of one caption (lower = more diverse)
    shapes_alignment, shapes_alignment1k   textgan.data.alignment on captioned-shapes data
Names without a count use MetricsConfig.num_samples (diversity: diversity_captions x diversity_samples).
"""

import re
from dataclasses import dataclass
from typing import Optional

from textgan.errors import UsageError

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
