"""One function per kind of metric: generate with fixed captions and latents, measure, return numbers.

Each returns {spec name: (value, results dict, protocol extras)} plus the images it generated, and is
collective (every rank calls it with the same arguments). `ctx` is the MetricEvaluator: it provides
the config, runtime, reference indexes and the lazily loaded extractor / CLIP tower.
"""

import time

import numpy as np

from textgan.metrics.alignment import combine_scores, score_image
from textgan.errors import UsageError
from textgan.metrics import fidelity
from textgan.metrics.clip_score import clip_scores
from textgan.metrics.diversity import msssim_settings, pairwise_msssim
from textgan.metrics.generation import latents, map_generated
from textgan.metrics.reference import captions_for, select

_EXTRACTOR_KIND = {"fid": "fid", "kid": "kid", "is": "isc"}


def _inputs(ctx, reference: str, count: int, z_dim: int):
    index = ctx.index(reference)
    positions = select(index, count, ctx.cfg.caption_seed)
    return index, positions, captions_for(index, positions, count), latents(count, z_dim, ctx.cfg.caption_seed)


def fidelity_group(ctx, specs, reference: str, count: int, G, encode_text) -> dict:
    """FID / KID / IS of one (reference, count): one generation shared by all of them."""
    extractor = ctx.extractor()
    index, positions, captions, z = _inputs(ctx, reference, count, G.z_dim)
    layers = sorted({extractor.layers[_EXTRACTOR_KIND[s.kind]] for s in specs})
    start = time.perf_counter()
    payloads = map_generated(G, encode_text, captions, z, ctx.cfg.batch_size, ctx.runtime,
                             lambda images, _: {k: v for k, v in extractor.features(images).items() if k in layers})
    fake = {layer: np.concatenate([p[layer] for p in payloads]) for layer in layers}
    generation_seconds = time.perf_counter() - start
    extras = {"extractor": extractor.identity, "resizing": fidelity.resizing(extractor, index.resolution)}
    real, out = {}, {}
    for spec in specs:
        if spec.kind == "is":
            score = fidelity.inception_score(fake[extractor.layers["isc"]], ctx.cfg.isc_splits)
            out[spec.name] = (score["mean"], score, {**extras, "isc_splits": ctx.cfg.isc_splits,
                                                      "rng_seed": fidelity.KID_RNG_SEED,
                                                      "generation_seconds": generation_seconds})
            continue
        layer = extractor.layers[spec.kind]
        if layer not in real:
            real[layer] = fidelity.real_features(index, positions, ctx.cfg.caption_seed, extractor, layer,
                                                 runtime=ctx.runtime, batch_size=ctx.cfg.batch_size,
                                                 cache_dir=ctx.cache_dir)
        features, cached = real[layer]
        if len(features) < 2:
            raise UsageError(f"{spec.name}: only {len(features)} reference images could be read from "
                             f"{index.shards_dir}; rebuild the reference shards")
        protocol = {**extras, "real_images": len(features), "real_features_cached": cached,
                    "generation_seconds": generation_seconds}
        if spec.kind == "fid":
            value = fidelity.fid(fake[layer], features)
            out[spec.name] = (value, {"fid": value}, protocol)
        else:
            subset = min(ctx.cfg.kid_subset_size, len(features), count)
            score = fidelity.kid(fake[layer], features, ctx.cfg.kid_subsets, subset)
            out[spec.name] = (score["mean"], score, {**protocol, "kid_subsets": ctx.cfg.kid_subsets,
                                                     "kid_subset_size": subset, "rng_seed": fidelity.KID_RNG_SEED})
    return out


def clip_score(ctx, spec, count: int, G, encode_text) -> dict:
    tower = ctx.clip_tower()
    _, _, captions, z = _inputs(ctx, spec.reference, count, G.z_dim)
    scores = np.concatenate(map_generated(G, encode_text, captions, z, ctx.cfg.batch_size, ctx.runtime,
                                          lambda images, texts: clip_scores(tower, images, texts)))
    results = {"mean": float(scores.mean()), "std": float(scores.std()), "n": len(scores)}
    resizing = (f"ClipTower: short side to {tower.image_size} px ({tower.interpolation}, antialiased), center crop, "
                "CLIP mean/std, as open_clip's preprocessing")
    return {spec.name: (results["mean"], results, {"clip": tower.identity, "resizing": resizing,
                                                    "formula": "100 * max(cos(image, caption), 0)"})}


def diversity(ctx, spec, G, encode_text) -> dict:
    """Mean over `diversity_captions` captions of the mean pairwise MS-SSIM of `diversity_samples` samples."""
    per_caption, captions_n = ctx.cfg.diversity_samples, ctx.cfg.diversity_captions
    index = ctx.index(spec.reference)
    positions = select(index, captions_n, ctx.cfg.caption_seed)
    texts = captions_for(index, positions, captions_n)
    captions = [t for t in texts for _ in range(per_caption)]
    z = latents(len(captions), G.z_dim, ctx.cfg.caption_seed)
    # Whole captions per batch, so that each caption's samples are compared within one batch.
    batch = max(1, ctx.cfg.batch_size // per_caption) * per_caption

    def measure(images, _):
        return [pairwise_msssim(images[k:k + per_caption]) for k in range(0, len(images), per_caption)]

    values = np.asarray([v for part in map_generated(G, encode_text, captions, z, batch, ctx.runtime, measure)
                         for v in part])
    results = {"mean": float(values.mean()), "std": float(values.std()), "captions": len(values),
               "samples_per_caption": per_caption}
    return {spec.name: (results["mean"], results, {"msssim": msssim_settings(index.resolution),
                                                   "library": "torchmetrics multiscale_structural_similarity_index_measure",
                                                   "lower_is_more_diverse": True})}


def shapes_alignment(ctx, spec, count: int, G, encode_text) -> dict:
    index = ctx.index(spec.reference)
    if index.manifest.get("source") != "shapes":
        raise UsageError(f"{spec.name} reads captioned-shapes captions, but {index.shards_dir} holds "
                         f"{index.manifest.get('source')!r} data; drop the metric for this data")
    _, _, captions, z = _inputs(ctx, spec.reference, count, G.z_dim)

    def measure(images, texts):
        return [score_image(np.ascontiguousarray(image.numpy().transpose(1, 2, 0)), text)
                for image, text in zip(images, texts)]

    scores = [s for part in map_generated(G, encode_text, captions, z, ctx.cfg.batch_size, ctx.runtime, measure)
              for s in part]
    results = combine_scores(scores)
    return {spec.name: (results["overall"], results, {"scorer": "textgan.metrics.alignment.score_image"})}
