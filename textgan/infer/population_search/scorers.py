"""What a search maximizes: a score per image of one prompt, higher = better.

    scorer = build_scorer("contrastive+d", model)            # or "clip", "augclip", "contrastive=1,d=0.5"
    scorer.prepare(prompt)                                   # once per prompt (text embeddings, calibration reset)
    scores = scorer(images)                                  # [N] float on the CPU, images [N, 3, R, R] in [-1, 1]

- clip: cosine between image and prompt in an open_clip model (a tag or a local weights file, as everywhere
  in textgan; default: the run's own text encoder's model).
- aug<scorer> (augclip, augd, augcontrastive): the scorer averaged over `views` DiffAugment views (colour,
  translation, cutout; FuseDream's AugCLIP): one adversarial pixel pattern fools one view, not the average.
  The views are drawn from a fixed seed for every call, so an image's score does not change between
  generations (common random numbers: candidates are compared on the same views).
- d: the discriminator's text-conditioned logit; contrastive: cosine between D's contrastive heads' image
  and text embeddings (heads that D trained on real image-caption pairs). Both need a checkpoint that
  holds D (a run or checkpoint directory; an exported file holds G_ema only). StyleGAN2's D compares each
  image with its minibatch group (minibatch stddev); a scorer's D uses groups of one, so an image's score
  does not depend on which candidates share its batch.
- A weighted sum standardizes each part by its mean and standard deviation over the prompt's first
  scored batch (the prior samples every algorithm starts from), then keeps those constants for the whole
  search: the parts are on comparable scales and a score means the same in every generation.
"""

import copy

import torch
import torch.nn.functional as F

from textgan.errors import UsageError
from textgan.infer.population_search.settings import SCORERS, parse_scorer

BASE_OF = {name: name[3:] if name.startswith("aug") else name for name in SCORERS}  # augd -> d

AUGMENT_POLICY = "color,translation,cutout"
AUGMENT_SEED = 0


class CLIPScorer:
    def __init__(self, tower):
        self.tower = tower
        self.text = None

    def prepare(self, prompt: str) -> None:
        self.text = F.normalize(self.tower.encode_texts([prompt]).float(), dim=-1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        embedded = F.normalize(self.tower.encode_images(images.to(self.tower.device)).float(), dim=-1)
        return (embedded @ self.text.to(embedded.device).T)[:, 0].float().cpu()


class AugmentedScorer:
    """A scorer's mean over `views` DiffAugment views of each image, the views drawn from a fixed seed in every
    call (common random numbers: every candidate is judged on the same views, every generation)."""

    def __init__(self, part, views: int):
        self.part, self.views = part, int(views)

    def prepare(self, prompt: str) -> None:
        self.part.prepare(prompt)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from textgan.augment.diff import DiffAugment

        augment = DiffAugment(AUGMENT_POLICY)
        g = torch.Generator(device=images.device).manual_seed(AUGMENT_SEED)
        total = torch.zeros(len(images))
        for _ in range(self.views):
            total += self.part(augment(images, generator=g, same_for_all=True))
        return total / self.views


class DiscriminatorScorer:
    def __init__(self, D, model, kind: str):
        self.D, self.model, self.kind = D, model, kind
        self.c = None

    def prepare(self, prompt: str) -> None:
        self.c = self.model.embed([prompt]).to(next(self.D.parameters()).device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.c.device)
        if self.kind == "d":
            return self.D(images, self.c.expand(len(images), -1)).float().reshape(-1).cpu()
        image, text, _ = self.D.contrastive(features=self.D.features(images), c=self.c)
        return F.cosine_similarity(image.float(), text.float(), dim=-1).cpu()


class WeightedScorer:
    """sum_k weight_k (score_k - mean_k) / std_k, mean/std of each part from the prompt's first batch."""

    def __init__(self, parts: dict, weights: dict):
        self.parts, self.weights = parts, weights
        self.calibration = None

    def prepare(self, prompt: str) -> None:
        for part in self.parts.values():
            part.prepare(prompt)
        self.calibration = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raw = {name: part(images) for name, part in self.parts.items()}
        if self.calibration is None:
            if len(images) < 2:
                raise UsageError("a weighted scorer calibrates on its first batch: score at least 2 images at once")
            self.calibration = {name: (float(v.mean()), float(v.std().clamp_min(1e-8))) for name, v in raw.items()}
        total = torch.zeros(len(images))
        for name, values in raw.items():
            mean, std = self.calibration[name]
            total += self.weights[name] * (values - mean) / std
        return total


def load_discriminator(model):
    """D of the checkpoint `model` was loaded from (eval mode, frozen, on the model's device); UsageError when
    the file holds no D (an exported generator)."""
    from textgan.nets import build_networks_from_config
    from textgan.train.checkpoint import load_weights

    if model.kind != "checkpoint":
        raise UsageError(f"{model.path} is an exported generator (G_ema only): the d and contrastive scorers need "
                         "the discriminator; give the run directory or a checkpoint directory instead, or "
                         "--scorer clip")
    _, D = build_networks_from_config(model.cfg, model.G.c_dim)
    try:
        D.load_state_dict(load_weights(model.weights_file)["D"])
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise UsageError(f"the discriminator of {model.weights_file} cannot be read: {e}") from e
    if hasattr(D, "mbstd"):
        D.mbstd = copy.copy(D.mbstd)
        D.mbstd.group_size = 1  # each image on its own (see the module docstring)
    return D.eval().requires_grad_(False).to(model.device)


def default_scorer(model) -> str:
    """clip when the run's text encoder has real weights (its CLIP knows images), else D's contrastive
    heads plus its logit (a demo or test run's CLIP has random weights: its image space means nothing)."""
    return "contrastive+d" if bool(model.cfg.text_encoder.random_weights) else "clip"


def build_scorer(spec: str, model, clip_model=None, clip_weights=None, views: int = 8):
    """(scorer, resolved spec). clip_model / clip_weights: the open_clip model of the CLIP scorers
    (default: the run's text encoder's)."""
    spec = default_scorer(model) if spec == "auto" else spec
    weights = parse_scorer(spec)
    bases = {BASE_OF[name] for name in weights}
    D = None
    if {"d", "contrastive"} & bases:
        D = load_discriminator(model)
        if "contrastive" in bases and getattr(D, "contrastive", None) is None:
            raise UsageError(f"{model.path}: its D has no contrastive heads (the run trained without a D "
                             "contrastive term, contrastive.S_D = 0); use --scorer d or clip")
    tower = None
    if "clip" in bases:
        tower = clip_tower(model, clip_model, clip_weights)
    parts = {}
    for name in weights:
        base = BASE_OF[name]
        part = CLIPScorer(tower) if base == "clip" else DiscriminatorScorer(D, model, base)
        parts[name] = AugmentedScorer(part, views) if base != name else part
    scorer = next(iter(parts.values())) if len(parts) == 1 else WeightedScorer(parts, weights)
    return scorer, spec


def clip_tower(model, clip_model=None, clip_weights=None):
    """The open_clip tower that scores: the one named, else the run's own text encoder (already loaded)."""
    if clip_model is None and clip_weights is None:
        return model.tower
    from textgan.encoders import load_clip

    te = model.cfg.text_encoder
    name = clip_model or str(te.model)
    if clip_weights is None and clip_model is not None:
        raise UsageError(f"--clip-model {clip_model}: give its weights too (--clip-weights TAG or a local file)")
    return load_clip(name, clip_weights, device=model.device)


__all__ = ["SCORERS", "build_scorer", "load_discriminator", "AugmentedScorer", "CLIPScorer", "DiscriminatorScorer",
           "WeightedScorer"]
