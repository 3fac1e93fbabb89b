"""FID, KID and Inception Score from torch-fidelity features; real-image features cached.

The numbers come from torch-fidelity's own functions (fid_features_to_statistics /
fid_statistics_to_metric, kid_features_to_metric, isc_features_to_metric) with its defaults (KID: cubic
polynomial kernel, rng_seed 2020; IS: 10 splits, shuffled with seed 2020), so a value here equals
torch_fidelity.calculate_metrics on the same images. Input 1 = generated, input 2 = real, as in
torch-fidelity's examples (KID's subset draws depend on that order).
"""

import importlib.metadata

import numpy as np
import torch

from textgan.metrics import cache
from textgan.metrics.reference import iter_selected_images

KID_RNG_SEED = 2020  # torch-fidelity's default rng_seed (KID subsets, IS shuffle)


def library_versions() -> dict:
    versions = {}
    for package in ("torch", "torch-fidelity", "numpy", "pillow", "textgan"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def resizing(extractor, resolution: int) -> str:
    inside = ("TF1-compatible bilinear resize to 299 px inside torch-fidelity's InceptionV3"
              if extractor.name == "inception-v3-compat" else f"whatever resize {extractor.name!r} does itself")
    return (f"{resolution} px uint8 images (reals: the shards' stored JPEGs decoded by PIL; fakes: G output "
            f"rounded to uint8) fed as they are; {inside}")


def real_features_key(index, count: int, seed: int, extractor, layer: str) -> dict:
    """Everything that changes the cached real features (see textgan.metrics.cache)."""
    return {
        "what": "real-features",
        "manifest_sha256": index.manifest_sha256,
        "resolution": index.resolution,
        "count": int(count),
        "selection_seed": int(seed),
        "extractor": {k: extractor.identity[k] for k in ("name", "class", "weights_sha256", "state_sha256")},
        "layer": layer,
        "resizing": resizing(extractor, index.resolution),
        "libraries": library_versions(),
    }


def real_features(index, positions: list, seed: int, extractor, layer: str, *, runtime, batch_size: int,
                  cache_dir: str) -> tuple:
    """(float32 [M, D] features of the selected reference images in selection order, cache hit?).
    Collective: every rank calls it; the ranks agree on hit or miss, so none waits alone."""
    fields = real_features_key(index, len(positions), seed, extractor, layer)
    cached = cache.load_arrays(cache_dir, "real", fields)
    if all(runtime.all_gather_object(cached is not None)):
        return cached["features"], True
    local = []
    for numbers, pixels in iter_selected_images(index, positions, runtime.rank, runtime.world_size, batch_size):
        local.append((numbers, extractor.features(pixels)[layer]))
    parts = [part for rank_parts in runtime.all_gather_object(local) for part in rank_parts]
    numbers = np.concatenate([np.asarray(n, dtype=np.int64) for n, _ in parts]) if parts else np.zeros(0, np.int64)
    features = np.concatenate([f for _, f in parts]) if parts else np.zeros((0, 0), np.float32)
    features = features[np.argsort(numbers, kind="stable")]
    if runtime.rank == 0:
        cache.save_arrays(cache_dir, "real", fields, {"features": features})
    return features, False


def fid(fake: np.ndarray, real: np.ndarray) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats = [fid_features_to_statistics(torch.from_numpy(np.ascontiguousarray(x))) for x in (fake, real)]
    return float(fid_statistics_to_metric(stats[0], stats[1], verbose=False)[KEY_METRIC_FID])


def kid(fake: np.ndarray, real: np.ndarray, subsets: int, subset_size: int) -> dict:
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    out = kid_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), kid_subsets=subsets,
                                 kid_subset_size=subset_size, rng_seed=KID_RNG_SEED, verbose=False)
    return {"mean": float(out[KEY_METRIC_KID_MEAN]), "std": float(out[KEY_METRIC_KID_STD])}


def inception_score(logits: np.ndarray, splits: int) -> dict:
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    out = isc_features_to_metric(torch.from_numpy(logits), splits=splits, shuffle=True, rng_seed=KID_RNG_SEED)
    return {"mean": float(out[KEY_METRIC_ISC_MEAN]), "std": float(out[KEY_METRIC_ISC_STD])}
