"""Where textgan.metrics keeps its cache, and (re-exported for existing callers) the `metrics:` section's
schema, which lives in textgan/config_metrics.py so that textgan.config imports no room above it."""

import os

from textgan.config_metrics import INCEPTION, METRICS_RANGES, MetricsConfig, validate_metrics_config

__all__ = ["INCEPTION", "METRICS_RANGES", "MetricsConfig", "validate_metrics_config", "default_cache_dir",
           "cache_dir_of"]


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "textgan", "metrics")


def cache_dir_of(cfg) -> str:
    return os.path.abspath(os.path.expanduser(cfg.cache_dir)) if cfg.cache_dir else default_cache_dir()
