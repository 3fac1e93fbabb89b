"""Evaluation you can trust: FID/KID/IS (torch-fidelity), CLIP score, diversity, shapes alignment.

    from textgan.metrics import MetricEvaluator, MetricsConfig
    evaluator = MetricEvaluator(cfg.metrics, runtime=runtime, train_shards=cfg.data.shards, run_dir=run_dir)
    evaluator.prepare()                                     # leakage check before anything is measured
    report = evaluator.run(G_ema, text.encode, kimg=kimg, tick=tick, snapshot=tag)   # on every rank
    report.scalars()  # {"Metrics/fid10k": ...};  report.seconds;  report["fid10k"].protocol

Files: config (the cache dir; the `metrics:` section and the metric names are textgan/config_metrics.py, so
that the config can check them without importing this room), reference (which images and captions),
cache (keyed real statistics), extractor (torch-fidelity, offline), generation (rank split),
fidelity / clip_score / diversity (the numbers), leakage, measure (per kind), evaluator (orchestration).
"""

from textgan.config_metrics import MetricsConfig, MetricSpec, parse_metric, parse_metrics, validate_metrics_config

# The evaluator (torch, numpy, torch-fidelity glue) loads on first use: importing textgan.metrics for a
# name or a config check needs no torch.
_LAZY = {"MetricEvaluator": "evaluator", "MetricResult": "evaluator", "MetricsReport": "evaluator",
         "LeakageError": "leakage"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"textgan.metrics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'textgan.metrics' has no attribute {name!r}")


__all__ = ["MetricsConfig", "validate_metrics_config", "MetricEvaluator", "MetricResult", "MetricsReport",
           "LeakageError", "MetricSpec", "parse_metric", "parse_metrics"]
