"""Evaluation you can trust: FID/KID/IS (torch-fidelity), CLIP score, diversity, shapes alignment.

    from textgan.metrics import MetricEvaluator, MetricsConfig
    evaluator = MetricEvaluator(cfg.metrics, runtime=runtime, train_shards=cfg.data.shards, run_dir=run_dir)
    evaluator.prepare()                                     # leakage check before anything is measured
    report = evaluator.run(G_ema, text.encode, kimg=kimg, tick=tick, snapshot=tag)   # on every rank
    report.scalars()  # {"Metrics/fid10k": ...};  report.seconds;  report["fid10k"].protocol

Files: config (MetricsConfig), registry (metric names), reference (which images and captions),
cache (keyed real statistics), extractor (torch-fidelity, offline), generation (rank split),
fidelity / clip_score / diversity (the numbers), leakage, measure (per kind), evaluator (orchestration).
"""

from textgan.metrics.config import MetricsConfig, validate_metrics_config
from textgan.metrics.registry import MetricSpec, parse_metric, parse_metrics

# The evaluator (torch, numpy, torch-fidelity glue) loads on first use, so that textgan.config, which
# holds MetricsConfig, stays as light to import as it was (no torch for --dry-run or config checks).
_LAZY = {"MetricEvaluator": "evaluator", "MetricResult": "evaluator", "MetricsReport": "evaluator",
         "LeakageError": "leakage"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"textgan.metrics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'textgan.metrics' has no attribute {name!r}")


__all__ = ["MetricsConfig", "validate_metrics_config", "MetricEvaluator", "MetricResult", "MetricsReport",
           "LeakageError", "MetricSpec", "parse_metric", "parse_metrics"]
