"""Cached real-image features: keyed by every input, and never served for changed inputs."""

import os

import numpy as np
import pytest
from metrics_fixture import (
    VAL_IDS,
    LookupGenerator,
    encode_ids,
    metrics_config,
    single_runtime,
    textured_images,
    tiny_extractor_weights,
    write_image_shards,
    write_sets,
)

from textgan.metrics import MetricEvaluator, cache, fidelity
from textgan.metrics.extractor import Extractor
from textgan.metrics.reference import load_index


def test_the_key_changes_when_any_input_changes(tmp_path):
    val_dir, _, _, _ = write_sets(tmp_path)
    index = load_index(val_dir, str(tmp_path / "cache"))
    extractor = Extractor(metrics_config(tmp_path, val_dir, None, []).feature_extractor)
    base = fidelity.real_features_key(index, 64, 0, extractor, "feat")
    variants = {
        "count": fidelity.real_features_key(index, 65, 0, extractor, "feat"),
        "seed": fidelity.real_features_key(index, 64, 1, extractor, "feat"),
        "layer": fidelity.real_features_key(index, 64, 0, extractor, "logits"),
    }
    for field, value in [("manifest_sha256", "0" * 64), ("resolution", 32), ("resizing", "other resize"),
                         ("libraries", {**base["libraries"], "torch-fidelity": "9.9"})]:
        variants[field] = {**base, field: value}
    for field in ("name", "class", "weights_sha256", "state_sha256"):
        variants[f"extractor.{field}"] = {**base, "extractor": {**base["extractor"], field: "changed"}}
    keys = {name: cache.cache_key(fields) for name, fields in variants.items()}
    assert cache.cache_key(dict(base)) == cache.cache_key(fidelity.real_features_key(index, 64, 0, extractor, "feat"))
    assert cache.cache_key(base) not in keys.values() and len(set(keys.values())) == len(keys), keys


def test_the_version_of_the_computation_is_part_of_the_key(monkeypatch):
    fields = {"a": 1}
    before = cache.cache_key(fields)
    monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
    assert cache.cache_key(fields) != before


def test_an_entry_whose_stored_key_differs_is_not_served(tmp_path):
    fields = {"what": "real-features", "count": 3}
    path = cache.save_arrays(str(tmp_path), "real", fields, {"features": np.ones((3, 2), np.float32)})
    assert np.array_equal(cache.load_arrays(str(tmp_path), "real", fields)["features"], np.ones((3, 2)))
    other = {"what": "real-features", "count": 4}
    os.replace(path, cache.entry_path(str(tmp_path), "real", other, ".npz"))  # a file under a wrong name
    assert cache.load_arrays(str(tmp_path), "real", other) is None
    with open(cache.entry_path(str(tmp_path), "real", fields, ".npz"), "wb") as f:
        f.write(b"truncated")
    assert cache.load_arrays(str(tmp_path), "real", fields) is None


def _fid(root, val_dir, train_dir, G, **changes):
    cfg = metrics_config(root, val_dir, train_dir, ["fid48"], **changes)
    result = MetricEvaluator(cfg, runtime=single_runtime(), log=lambda *a: None).run(G, encode_ids)["fid48"]
    return result.value, result.protocol["real_features_cached"]


def test_changed_reference_images_or_extractor_weights_are_never_served_stale_features(tmp_path):
    val_dir, val, train_dir, _ = write_sets(tmp_path)
    G_old = LookupGenerator(VAL_IDS, val)
    assert _fid(tmp_path, val_dir, train_dir, G_old) == (pytest.approx(0, abs=1e-9), False)
    assert _fid(tmp_path, val_dir, train_dir, G_old) == (pytest.approx(0, abs=1e-9), True)

    # The same directory, ids and file names, other pictures: a stale cache would give ~0 for G_old.
    new_val = write_image_shards(val_dir, textured_images(len(VAL_IDS), 16, seed=5), VAL_IDS, split="val")
    value, cached = _fid(tmp_path, val_dir, train_dir, G_old)
    assert not cached and value > 1e-3
    assert _fid(tmp_path, val_dir, train_dir, LookupGenerator(VAL_IDS, new_val)) == (pytest.approx(0, abs=1e-9), True)

    # Other extractor weights under the same extractor name: recomputed, equal to a run on an empty cache.
    weights = tiny_extractor_weights(tmp_path / "other.pt", seed=11)
    value, cached = _fid(tmp_path, val_dir, train_dir, G_old, feature_extractor_weights=weights)
    fresh, fresh_cached = _fid(tmp_path, val_dir, train_dir, G_old, feature_extractor_weights=weights,
                               cache_dir=str(tmp_path / "empty-cache"))
    assert not cached and not fresh_cached and value == fresh
    assert len([f for f in os.listdir(tmp_path / "cache") if f.startswith("real-")]) == 3
