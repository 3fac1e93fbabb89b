"""Metrics during training: every `metrics.metrics_ticks` ticks (and at the end) on G_ema, on every rank.

    metrics = PeriodicMetrics(cfg, runtime, run_dir, log)
    metrics.prepare()                    # before training: leakage check, weights loaded, best so far
    ...
    if metrics.due(state.tick, done):    # after the tick's stats line and checkpoint
        metrics.run(engines, text, state, writer, snapshot, client_state, rank_state)
    result.update(metrics.summary())

What it adds to textgan.metrics.MetricEvaluator (which measures and writes metric-NAME.jsonl):
- TensorBoard: `Metrics/NAME` (and `Metrics/NAME/KEY` for metrics with several numbers), and the cost
  `Timing/metrics_sec`, `Timing/metrics/NAME_images_per_sec`, `Timing/metrics_fraction` (share of the
  wall time since the previous metrics, metrics included) and `Timing/metrics_fraction_total`.
- The best checkpoint of the primary metric (the first one listed): a full checkpoint in
  RUN/best/NAME/ (RUN/best is its own checkpoint root, so keep_checkpoints never prunes it), saved
  whenever the value improves; a kill at any step of that replacement leaves the old or the new best
  (textgan.train.checkpoint.recover_replacements). Its client state carries the record {"metric",
  "value", "kimg", "tick"}, which is read back at start: the best survives resume, and
  `textgan eval RUN/best/NAME` or `textgan export RUN/best/NAME` find it like any checkpoint.
"""

import math
import os
import time

import torch

from textgan.train.checkpoint import CLIENT_FILE, complete_checkpoints, recover_replacements, save_checkpoint

BEST_DIR = "best"  # RUN/best/<metric>/: the best checkpoint of the primary metric
BEST_KEY = "best_metric"  # its record in that checkpoint's client state


def read_best(best_root: str, metric: str):
    """The record of the complete best checkpoint of `metric` under best_root, with its path; or None.
    A replacement that a crash cut between its two renames is finished first (recover_replacements):
    otherwise the best would be forgotten and the next, worse value would take its place."""
    recover_replacements(best_root)
    for _, path in complete_checkpoints(best_root):
        if os.path.basename(path) == metric:
            client = torch.load(os.path.join(path, CLIENT_FILE), map_location="cpu", weights_only=True)
            record = client.get(BEST_KEY)
            return {**record, "checkpoint": path} if record else None
    return None


def metric_scalars(report) -> dict:
    """{"Metrics/NAME": value} plus {"Metrics/NAME/KEY": number} for metrics with several numbers
    (e.g. shapes_alignment's color/position/relation/shape, KID's mean and std)."""
    out = dict(report.scalars())
    for name, result in report.results.items():
        numbers = {k: v for k, v in result.results.items() if isinstance(v, float)}  # not counts (ints)
        if len(numbers) > 1:
            out.update({f"Metrics/{name}/{k}": float(v) for k, v in numbers.items()})
    return out


def _rounded(results: dict) -> dict:
    """Floats to 4 decimals, also inside nested dicts (shapes_alignment's one_object, two_objects)."""
    return {k: _rounded(v) if isinstance(v, dict) else round(v, 4) if isinstance(v, float) else v
            for k, v in results.items()}


class PeriodicMetrics:
    def __init__(self, cfg, runtime, run_dir: str, log=print):
        from textgan.metrics import MetricEvaluator

        self.evaluator = MetricEvaluator(cfg.metrics, runtime=runtime, train_shards=cfg.data.shards,
                                         run_dir=run_dir, log=log)
        self.runtime = runtime
        self.log = log
        self.best_root = os.path.join(run_dir, BEST_DIR)
        self.primary = self.evaluator.specs[0] if self.evaluator.specs else None
        self.best = None  # record of the best checkpoint: {"metric", "value", "kimg", "tick", "checkpoint"}
        self.last = None  # the latest MetricsReport
        self._started = self._since = time.time()
        self._seconds_total = 0.0

    def prepare(self) -> None:
        """Before training (collective): index the references and check them for leakage (LeakageError
        stops the run unless metrics.allow_overlap), load the extractor / CLIP model the metrics need
        (missing weights stop the run now, not at the first metric hours later), read the best so far."""
        if self.primary is None:
            return
        self.evaluator.prepare()
        kinds = {s.kind for s in self.evaluator.specs}
        if kinds & {"fid", "kid", "is"}:
            self.evaluator.extractor()
        if "clip_score" in kinds:
            self.evaluator.clip_tower()
        mine = read_best(self.best_root, self.primary.name) if self.runtime.rank == 0 else None
        self.best = self.runtime.all_gather_object(mine)[0]  # one reading for every rank
        if self.best:
            self.log(f"best {self.best['metric']} so far: {self.best['value']:.4f} at kimg {self.best['kimg']:.1f} "
                     f"({self.best['checkpoint']})")
        self._started = self._since = time.time()

    def due(self, tick: int, done: bool) -> bool:
        return self.evaluator.due(tick, done)

    def run(self, engines, text, state, writer, snapshot, client_state: dict, rank_state: dict):
        """Measure, log, keep the best checkpoint. Collective: every rank calls it with the same G_ema.
        snapshot: the checkpoint saved at this tick (None if none), recorded with each result."""
        started = time.time()
        kimg = state.cur_nimg / 1000
        report = self.evaluator.run(engines.G_ema, text.encode, kimg=kimg, tick=state.tick, snapshot=snapshot)
        improved = self._keep_best(report, engines, state, client_state, rank_state)
        now = time.time()
        seconds = now - started
        self._seconds_total += seconds
        timing = {**report.timing(), "Timing/metrics_fraction": seconds / max(now - self._since, 1e-9),
                  "Timing/metrics_fraction_total": self._seconds_total / max(now - self._started, 1e-9)}
        for name, value in {**metric_scalars(report), **timing}.items():
            writer.add_scalar(name, value, kimg)
        values = ", ".join(f"{n} {'n/a' if v is None else f'{v:.4f}'}" for n, v in report.values().items())
        self.log(f"metrics at kimg {kimg:.1f}: {values}{' (new best)' if improved else ''}; {seconds:.1f} s, "
                 f"{100 * timing['Timing/metrics_fraction']:.1f}% of the time since the last metrics")
        self.last = report
        self._since = now
        return report

    def _keep_best(self, report, engines, state, client_state: dict, rank_state: dict) -> bool:
        spec = self.primary
        value = report[spec.name].value
        better = value is not None and math.isfinite(value) and spec.better(value, self.best and self.best["value"])
        # Rank 0 decides for all: save_checkpoint is collective, and a value equal to the best up to
        # the last bit must not make ranks disagree.
        if not self.runtime.all_gather_object(better)[0]:
            return False
        record = {"metric": spec.name, "value": float(value), "higher_is_better": spec.higher_is_better,
                  "kimg": state.cur_nimg / 1000, "tick": int(state.tick)}
        # One checkpoint per metric name; earlier primaries' bests (a changed config) are kept too.
        others = [p for _, p in complete_checkpoints(self.best_root) if os.path.basename(p) != spec.name]
        path = save_checkpoint(self.best_root, spec.name, engines, {**client_state, BEST_KEY: record},
                               keep=len(others) + 1, rank_state=rank_state)
        self.best = {**record, "checkpoint": path}
        return True

    def summary(self) -> dict:
        """For the training result: the latest values, the best checkpoint, and (shapes data) the latest
        shapes_alignment numbers, which launchers/submit.py prints."""
        out = {}
        if self.last is not None:
            out["metrics"] = self.last.values()
            for name, result in self.last.results.items():
                if result.kind == "shapes_alignment":
                    out["shapes_alignment"] = _rounded(result.results)
                    break
        if self.best is not None:
            out["best_checkpoint"] = self.best["checkpoint"]
            out["best_metric"] = {k: v for k, v in self.best.items() if k != "checkpoint"}
        return out
