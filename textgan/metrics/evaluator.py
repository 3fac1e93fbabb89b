"""MetricEvaluator: the one object the training loop and `textgan eval` use.

    evaluator = MetricEvaluator(cfg.metrics, runtime=runtime, train_shards=cfg.data.shards, run_dir=run_dir)
    evaluator.prepare()                         # at start: reference indexes + leakage check (fail fast)
    ...
    if evaluator.due(state.tick, done):         # every metrics_ticks ticks (and at the end)
        report = evaluator.run(G_ema, text.encode, kimg=..., tick=..., snapshot=...)   # collective
        report.scalars()   -> {"Metrics/fid10k": 12.3, ...}     for TensorBoard / stats
        report.seconds     -> wall time of all metrics;  report.timing() -> {"Timing/metrics_sec": ...}

Every rank calls run() with the same G_ema; each generates its deterministic share and all ranks get
the same report. Rank 0 appends one line per metric to run_dir/metric-NAME.jsonl.
"""

import json
import os
import time
from dataclasses import dataclass

from textgan.errors import UsageError
from textgan.metrics import leakage, measure
from textgan.metrics.config import cache_dir_of
from textgan.metrics.fidelity import library_versions
from textgan.metrics.reference import load_index
from textgan.config_metrics import FIDELITY_KINDS, parse_metrics

IMAGE_KINDS = ("fid", "kid")  # metrics whose number depends on the reference images themselves


@dataclass
class MetricResult:
    name: str
    kind: str
    value: float
    higher_is_better: bool
    results: dict  # all numbers of the metric (e.g. KID mean and std)
    protocol: dict  # what the number means: reference, samples, captions, resizing, extractor, versions
    seconds: float  # wall time of the measurement (shared by metrics computed from one generation)
    images: int  # images generated for it
    images_per_sec: float  # generation + features (+ scoring) throughput
    shared_with: tuple = ()  # other metrics computed from the same generation


@dataclass
class MetricsReport:
    results: dict  # name -> MetricResult, in the configured order
    seconds: float  # wall time of run()

    def __getitem__(self, name: str) -> MetricResult:
        return self.results[name]

    def values(self) -> dict:
        return {name: r.value for name, r in self.results.items()}

    def scalars(self) -> dict:
        """{"Metrics/NAME": value} for TensorBoard (None values left out)."""
        return {f"Metrics/{name}": r.value for name, r in self.results.items() if r.value is not None}

    def timing(self) -> dict:
        out = {"Timing/metrics_sec": self.seconds}
        out.update({f"Timing/metrics/{n}_images_per_sec": r.images_per_sec for n, r in self.results.items()})
        return out


class MetricEvaluator:
    def __init__(self, cfg, *, runtime, train_shards=None, run_dir=None, log=print):
        self.cfg = cfg
        self.runtime = runtime
        self.specs = parse_metrics(list(cfg.metrics))
        self.train_shards = cfg.train_shards or train_shards
        self.run_dir = run_dir
        self.cache_dir = cache_dir_of(cfg)
        self.log = log if runtime.rank == 0 else (lambda *a, **k: None)
        self._indexes, self._leakage = {}, {}
        self._extractor = self._clip = None

    # ------------------------------------------------------------------ resources (lazy, once)

    def _shards_dir(self, reference: str) -> str:
        if reference == "train":
            if not self.train_shards:
                raise UsageError("metrics named *_train need the training shards (data.shards / --train-shards)")
            return self.train_shards
        if not self.cfg.reference:
            names = [s.name for s in self.specs if s.reference == "val"]
            raise UsageError(f"metrics {names} need reference shards: set metrics.reference (textgan eval: "
                             "--reference) to val shards built like the training shards (e.g. `shards build coco "
                             "--split val`), or use the *_train variants, named so because they are not comparable")
        return self.cfg.reference

    def index(self, reference: str):
        """ShardIndex of the "val" or "train" set. Rank 0 builds a missing index; the others then load it."""
        if reference not in self._indexes:
            path = self._shards_dir(reference)
            error = None
            if self.runtime.rank == 0:
                try:
                    self._indexes[reference] = load_index(path, self.cache_dir)
                except Exception as e:  # tell the other ranks instead of leaving them waiting
                    error = e
            failed = self.runtime.all_gather_object(None if error is None else repr(error))[0]
            if error is not None:
                raise error
            if failed is not None:
                raise RuntimeError(f"rank 0 could not index {path}: {failed}")
            if self.runtime.rank != 0:
                self._indexes[reference] = load_index(path, self.cache_dir)
        return self._indexes[reference]

    def extractor(self):
        if self._extractor is None:
            from textgan.metrics.extractor import Extractor

            self._extractor = Extractor(self.cfg.feature_extractor, self.cfg.feature_extractor_weights,
                                        device=self.runtime.device, weights_sha256=self.cfg.feature_extractor_sha256)
        return self._extractor

    def clip_tower(self):
        if self._clip is None:
            from textgan.encoders import load_clip

            self._clip = load_clip(self.cfg.clip_model, self.cfg.clip_pretrained, device=self.runtime.device)
        return self._clip

    # ------------------------------------------------------------------ protocol

    def prepare(self) -> None:
        """Index the reference sets and run the leakage check (LeakageError unless allow_overlap). Idempotent;
        call it before training so that a contaminated reference stops the run at once, not hours later."""
        # Only FID and KID compare the reference's images with G's; the others read captions from it.
        compares_images = {s.reference for s in self.specs if s.kind in IMAGE_KINDS}
        for reference in dict.fromkeys(s.reference for s in self.specs):
            index = self.index(reference)
            if reference in self._leakage:
                continue
            if reference == "train":
                self._leakage[reference] = {"checked": False, "reason": "the reference is the training set"}
            elif reference not in compares_images:
                self._leakage[reference] = {"checked": False, "reason": "only captions are read from this "
                                            "reference (no configured metric compares its images)"}
            elif self.train_shards:
                leak = leakage.find_leakage(index, self.index("train"))
                leakage.enforce(leak, index.shards_dir, self.cfg.allow_overlap, self.log)
                self._leakage[reference] = leak
            elif self.cfg.allow_overlap:
                self._leakage[reference] = {"checked": False, "reason": "no training shards given (allow_overlap)"}
            else:
                raise UsageError("the leakage check needs the training shards (data.shards, or textgan eval "
                                 "--train-shards); pass them, or allow_overlap to measure unchecked")

    def due(self, tick: int, done: bool = False) -> bool:
        """Whether the loop should run the metrics at this tick (every metrics_ticks ticks and at the end)."""
        every = int(self.cfg.metrics_ticks)
        return bool(self.specs) and every > 0 and (done or tick % every == 0)

    def _protocol(self, spec, count, extras) -> dict:
        index = self.index(spec.reference)
        return {"metric": spec.name, "kind": spec.kind, "reference_set": spec.reference,
                "reference": index.describe(), "num_samples": count,
                "captions": {"source": f"{spec.reference} reference shards (split {index.manifest.get('split')})",
                             "seed": self.cfg.caption_seed,
                             "rule": "images picked by seeded permutation of the ids, one caption each, drawn from "
                                     "the image id (textgan's evaluation caption)"},
                "latents": {"seed": self.cfg.caption_seed, "noise_mode": "const"},
                "leakage": self._leakage.get(spec.reference), "libraries": library_versions(), **extras}

    # ------------------------------------------------------------------ measuring

    def run(self, G, encode_text, *, kimg=None, tick=None, snapshot=None) -> MetricsReport:
        """Measure every configured metric on G (G_ema) with `encode_text` (captions -> c). Collective."""
        self.prepare()
        started = time.perf_counter()
        for reference in dict.fromkeys(s.reference for s in self.specs):
            resolution = self.index(reference).resolution
            if getattr(G, "img_resolution", resolution) != resolution:
                raise UsageError(f"G makes {G.img_resolution} px images but the {reference} reference shards "
                                 f"{self.index(reference).shards_dir} hold {resolution} px images; metrics must "
                                 "compare images prepared at the same resolution")
        measured = {}
        groups = {}
        for spec in self.specs:
            if spec.kind in FIDELITY_KINDS:
                groups.setdefault((spec.reference, spec.count), []).append(spec)
        for spec in self.specs:
            if spec.name in measured:
                continue
            t0 = time.perf_counter()
            if spec.kind in FIDELITY_KINDS:
                group = groups[(spec.reference, spec.count)]
                values, count = measure.fidelity_group(self, group, spec.reference, spec.count, G, encode_text), spec.count
            elif spec.kind == "clip_score":
                count = spec.count or self.cfg.num_samples
                values = measure.clip_score(self, spec, count, G, encode_text)
            elif spec.kind == "diversity":
                count = self.cfg.diversity_captions * self.cfg.diversity_samples
                values = measure.diversity(self, spec, G, encode_text)
            else:
                count = spec.count or self.cfg.num_samples
                values = measure.shapes_alignment(self, spec, count, G, encode_text)
            seconds = time.perf_counter() - t0
            names = tuple(values)
            for name, (value, results, extras) in values.items():
                s = next(x for x in self.specs if x.name == name)
                # Throughput counts generation + features; a first run's real-image features are excluded.
                busy = extras.pop("generation_seconds", seconds)
                measured[name] = MetricResult(
                    name=name, kind=s.kind, value=value, higher_is_better=s.higher_is_better, results=results,
                    protocol=self._protocol(s, count, extras), seconds=seconds, images=count,
                    images_per_sec=count / max(busy, 1e-9), shared_with=tuple(n for n in names if n != name))
        report = MetricsReport({s.name: measured[s.name] for s in self.specs}, time.perf_counter() - started)
        if self.run_dir and self.runtime.rank == 0:
            append_jsonl(self.run_dir, report, kimg=kimg, tick=tick, snapshot=snapshot)
        return report


def append_jsonl(run_dir: str, report: MetricsReport, *, kimg=None, tick=None, snapshot=None) -> None:
    """One line per metric in run_dir/metric-NAME.jsonl."""
    for name, r in report.results.items():
        line = {"metric": name, "value": r.value, "results": r.results, "kimg": kimg, "tick": tick,
                "snapshot": snapshot, "timestamp": time.time(), "protocol": r.protocol,
                "timing": {"seconds": r.seconds, "images": r.images, "images_per_sec": r.images_per_sec,
                           "shared_with": list(r.shared_with)}}
        with open(os.path.join(run_dir, f"metric-{name}.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=str) + "\n")


