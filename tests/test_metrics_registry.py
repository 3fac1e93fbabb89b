"""Metric names and MetricsConfig checks: what a name means, and errors that say what is wrong."""

import pytest

from textgan.errors import UsageError
from textgan.metrics import MetricsConfig, parse_metric, parse_metrics, validate_metrics_config


@pytest.mark.parametrize("name, kind, count, reference", [
    ("fid10k", "fid", 10_000, "val"), ("fid30k", "fid", 30_000, "val"), ("fid500", "fid", 500, "val"),
    ("fid10k_train", "fid", 10_000, "train"), ("kid10k", "kid", 10_000, "val"), ("is50k", "is", 50_000, "val"),
    ("clip_score", "clip_score", None, "val"), ("clip_score1k", "clip_score", 1000, "val"),
    ("diversity", "diversity", None, "val"), ("shapes_alignment", "shapes_alignment", None, "val"),
])
def test_names_say_kind_count_and_reference(name, kind, count, reference):
    spec = parse_metric(name)
    assert (spec.name, spec.kind, spec.count, spec.reference) == (name, kind, count, reference)


def test_direction_of_improvement():
    assert parse_metric("fid10k").better(3.0, 4.0) and not parse_metric("fid10k").better(5.0, 4.0)
    assert parse_metric("clip_score").better(30.0, 25.0) and not parse_metric("is10k").better(1.0, 2.0)
    assert parse_metric("diversity").better(0.2, 0.3)  # lower MS-SSIM = more diverse
    assert parse_metric("kid10k").better(1.0, None)


@pytest.mark.parametrize("names, message", [
    (["fid"], "needs a sample count"),
    (["fid10"], None),  # valid
    (["fidd10k"], "unknown metric"),
    (["fid0"], ">= 1"),
    (["diversity10"], "takes no count"),
    (["fid10k", "fid10k"], "listed twice"),
])
def test_bad_names_are_refused_with_a_reason(names, message):
    if message is None:
        assert parse_metrics(names)[0].count == 10
        return
    with pytest.raises(UsageError, match=message):
        parse_metrics(names)


def test_comma_separated_string_and_config_validation():
    assert [s.name for s in parse_metrics("fid10k, clip_score")] == ["fid10k", "clip_score"]
    validate_metrics_config(MetricsConfig(metrics=["fid10k", "diversity"]))
    with pytest.raises(UsageError, match="metrics.diversity_samples must be >= 2"):
        validate_metrics_config(MetricsConfig(diversity_samples=1))
    with pytest.raises(UsageError, match="metrics.batch_size must be >= 1"):
        validate_metrics_config(MetricsConfig(batch_size=0))
    with pytest.raises(UsageError, match="unknown metric 'fidx'"):
        validate_metrics_config(MetricsConfig(metrics=["fidx"]))


def test_metrics_config_works_as_an_omegaconf_structured_section():
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(OmegaConf.structured(MetricsConfig), OmegaConf.from_dotlist(["metrics=[fid10k]",
                                                                                        "metrics_ticks=10"]))
    assert list(cfg.metrics) == ["fid10k"] and cfg.metrics_ticks == 10 and cfg.feature_extractor_weights is None
