"""Held-out verifiers: scores a search reports but never searches on, so that verifier hacking shows
(the searched score rises while a score it was not searched on stays or falls; Ma et al. 2025).

- shapes_alignment: the captioned-shapes data's pixel measure (colour, position or relation, shape; see
  textgan.metrics.alignment). It knows the pictures' ground truth, so no search can fool it by adversarial
  pixels the way it can fool a learned scorer.
- clip: cosine in a second open_clip model (e.g. a larger CLIP than the searched one), on COCO prompts.

    verifier = build_verifier("auto", prompts, model)      # None when no verifier applies
    verifier.score(images_uint8, prompt)                    # {"color": 1.0, "position": 0.0, ...} per image
    verifier.summary([per-image dicts])                     # mean of each entry over images / prompts
"""

import numpy as np

from textgan.errors import UsageError


class ShapesVerifier:
    name = "shapes_alignment"
    headline = "overall"

    def score(self, images_uint8, prompt: str) -> list:
        from textgan.metrics.alignment import score_image

        results = []
        for image in images_uint8:
            result = score_image(image, prompt)
            entries = {k: (None if v is None else float(v)) for k, v in result.items()}
            available = [v for v in entries.values() if v is not None]
            entries["overall"] = float(np.mean(available)) if available else None
            results.append(entries)
        return results

    def summary(self, results: list) -> dict:
        return mean_entries(results)


class CLIPVerifier:
    name = "clip"
    headline = "clip"

    def __init__(self, tower):
        self.tower = tower

    def score(self, images_uint8, prompt: str) -> list:
        import torch

        from textgan.metrics.clip_score import clip_scores

        pixels = torch.as_tensor(np.asarray(images_uint8)).permute(0, 3, 1, 2).contiguous()
        return [{"clip": float(v)} for v in clip_scores(self.tower, pixels, [prompt] * len(pixels))]

    def summary(self, results: list) -> dict:
        return mean_entries(results)


def mean_entries(results: list) -> dict:
    """{key: mean over the results where it is not None (None where it never is)}, plus "n"."""
    keys = [k for k in (results[0] if results else {})]
    out = {}
    for key in keys:
        values = [r[key] for r in results if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    out["n"] = len(results)
    return out


def is_shapes_prompt(prompt: str) -> bool:
    from textgan.metrics.alignment import parse_caption

    try:
        parse_caption(prompt)
    except ValueError:
        return False
    return True


def build_verifier(name: str, prompts, model=None, clip_model=None, clip_weights=None):
    """The verifier `name` (auto: shapes_alignment when every prompt is a captioned-shapes caption, clip when
    --verifier-clip-model is given, else none); None for none."""
    prompts = list(prompts)
    if name == "auto":
        if all(is_shapes_prompt(p) for p in prompts):
            name = "shapes_alignment"
        else:
            name = "clip" if clip_model is not None else "none"
    if name == "none":
        return None
    if name == "shapes_alignment":
        bad = [p for p in prompts if not is_shapes_prompt(p)]
        if bad:
            raise UsageError(f"--verifier shapes_alignment scores captioned-shapes captions only; {bad[0]!r} is not "
                             "one (e.g. 'a red circle above a blue square'); use --verifier clip or none")
        return ShapesVerifier()
    if name == "clip":
        if clip_model is None or clip_weights is None:
            raise UsageError("--verifier clip needs a second CLIP model: --verifier-clip-model NAME and "
                             "--verifier-clip-weights TAG_OR_FILE (one that is not searched on)")
        from textgan.encoders import load_clip

        device = model.device if model is not None else "cpu"
        return CLIPVerifier(load_clip(clip_model, clip_weights, device=device))
    raise UsageError(f"--verifier {name!r}: choose auto, shapes_alignment, clip or none")
