"""The research's contrastive terms: feature spaces ("structures") x pair types, with their weights.

Structures s:
  D           D's learned heads on its pooled image features, and on the text condition
  clip        the frozen CLIP image tower on images, against the CLIP text embedding (= c itself)
  perceptual  a frozen ImageNet ResNet/VGG on images (image-image only)
Pair types (row i of a generator batch):
  it      generated image i  <->  the caption it was generated from
  it_het  generated image i  <->  another caption of the same real image (heterologous)
  ii      generated image i  <->  the real image whose caption generated it
  ii_het  generated image i  <->  a generated image made from another caption of the same real
          image. These come free of any extra generator pass: G's micro-batch is laid out in
          two halves, rows h+i made from another caption of row i's image (`paired`).
Weights: w_s^it = S_s C_it, w_s^it_het = S_s C_it h, w_s^ii = S_s C_ii, w_s^ii_het = S_s C_ii h.
Only terms with a positive weight are computed (and only the features they need): all weights zero
computes nothing. D's heads learn in D's phase on real image-caption pairs (weight S_D C_it).

Pure torch: ranks, world size and the gather function are plain arguments (textgan.losses.contrastive).
"""

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from textgan.losses.contrastive import info_nce

STRUCTURES = ("D", "clip", "perceptual")
PAIRS = ("it", "it_het", "ii", "ii_het")


def term_weights(cc) -> dict:
    """{"D_it": S_D C_it, "D_it_het": S_D C_it h, ..., "perceptual_ii_het": S_perceptual C_ii h} for a
    `contrastive` config section; every term, zeros included."""
    structure = {"D": cc.S_D, "clip": cc.S_clip, "perceptual": cc.S_perceptual}
    pair = {"it": cc.C_it, "it_het": cc.C_it * cc.h, "ii": cc.C_ii, "ii_het": cc.C_ii * cc.h}
    return {
        f"{s}_{p}": float(structure[s]) * float(pair[p])
        for s in STRUCTURES
        for p in PAIRS
        if not (s == "perceptual" and p.startswith("it"))
    }


def noisy_condition(c: torch.Tensor, relative_std: float) -> torch.Tensor:
    """Text-side augmentation (Lafite): c + noise of norm relative_std * |c| in a random direction,
    renormalized to |c|. relative_std 0 returns c itself (and draws no random numbers)."""
    if relative_std <= 0:
        return c
    noise = F.normalize(torch.randn_like(c), dim=1)
    norm = c.norm(dim=1, keepdim=True)
    return F.normalize(c + relative_std * norm * noise, dim=1) * norm


class ContrastiveTerms:
    """Built from the `contrastive` config section, the frozen towers the active terms need (clip:
    a textgan.encoders.ClipTower, perceptual: a PerceptualNet; None when unused) and the distributed
    context (gather(t) -> every rank's rows, rank, world_size)."""

    def __init__(self, cc, clip=None, perceptual=None, gather: Optional[Callable] = None, rank: int = 0,
                 world_size: int = 1):
        self.weights = {name: w for name, w in term_weights(cc).items() if w > 0}
        self.D_real_weight = float(cc.S_D) * float(cc.C_it)
        self.symmetric = bool(cc.symmetric)
        self.by_image = cc.positives == "image"
        self.temperature = float(cc.temperature)
        self.text_noise = float(cc.text_noise)
        self.clip, self.perceptual = clip, perceptual
        self.dist = {"gather": gather if cc.gather else None, "rank": rank, "world_size": world_size}
        for s, tower in (("clip", clip), ("perceptual", perceptual)):
            if self.uses(s) and tower is None:
                raise ValueError(f"contrastive terms {self.terms_of(s)} need the {s} tower; none was given")

    # What the active terms need, so that the caller computes nothing else.
    @property
    def active(self) -> bool:
        return bool(self.weights)

    def terms_of(self, structure: str) -> list:
        return [name for name in self.weights if name.startswith(structure + "_")]

    def uses(self, structure: str) -> bool:
        return bool(self.terms_of(structure))

    @property
    def paired(self) -> bool:
        """G's micro-batch is laid out in halves (heterologous image-image pairs)."""
        return any(name.endswith("_ii_het") for name in self.weights)

    @property
    def needs_alt_captions(self) -> bool:
        return self.paired or any(name.endswith("_it_het") for name in self.weights)

    def needs_real(self, structure: str) -> bool:
        return f"{structure}_ii" in self.weights

    @property
    def needs_heads(self) -> bool:
        return self.uses("D")

    def _nce(self, a, b, temperature, ids, symmetric=None):
        return info_nce(a, b, temperature, self.symmetric if symmetric is None else symmetric,
                        ids=ids if self.by_image else None, **self.dist)

    def generator_terms(self, fakes, c, c_het=None, ids=None, D_features=None, heads=None,
                        real: Optional[Callable] = None) -> dict:
        """Terms of G's phase for a generator batch.

        fakes [n, 3, R, R] (with their graph into G); c / c_het [n, c_dim]: each row's caption and
        another caption of the same image (clean, without text noise); ids [n]: image ids;
        D_features [n, F]: D's pooled features of the (augmented) fakes, from the adversarial
        forward (graph into G, D frozen); heads: D.contrastive; real(structure) -> [n, d] features of
        each row's real image, without gradient. Returns {"total": weighted sum,
        "Loss/G/contrastive/NAME": each term (unweighted, detached)}."""
        n = fakes.shape[0]
        if self.paired and n % 2:
            raise ValueError(f"heterologous image-image pairs need an even generator batch, got {n}")
        h = n // 2
        embed = {}
        if self.uses("D"):
            image, _, temperature = heads(features=D_features)
            embed["D"] = (image, heads.text, temperature)
        if self.uses("clip"):
            embed["clip"] = (self.clip.encode_images(fakes), lambda t: t, self.temperature)
        if self.uses("perceptual"):
            embed["perceptual"] = (self.perceptual.encode_images(fakes), None, self.temperature)
        values = {}
        for name in self.weights:
            structure, pair = name.split("_", 1)
            img, text, temperature = embed[structure]
            if pair == "it":
                values[name] = self._nce(img, text(c), temperature, ids)
            elif pair == "it_het":
                values[name] = self._nce(img, text(c_het), temperature, ids)
            elif pair == "ii":
                with torch.no_grad():
                    target = real(structure)
                    if structure == "D":
                        target = heads.image(target)
                if self.paired:  # rows h.. show the same real images as rows ..h: count each once
                    values[name] = (self._nce(img[:h], target[:h], temperature, _half(ids, h)) +
                                    self._nce(img[h:], target[:h], temperature, _half(ids, h))) / 2
                else:
                    values[name] = self._nce(img, target, temperature, ids)
            else:  # ii_het
                values[name] = self._nce(img[:h], img[h:], temperature, _half(ids, h))
        return self._result(values, "G")

    def discriminator_terms(self, real_D_features, c, ids=None, heads=None) -> dict:
        """D's heads on real image-caption pairs (weight S_D C_it); {} when that weight is 0."""
        if self.D_real_weight <= 0:
            return {}
        image, text, temperature = heads(features=real_D_features, c=c)
        value = self._nce(image, text, temperature, ids)
        out = self._result({"D_it": value}, "D", weights={"D_it": self.D_real_weight})
        out["Stats/contrastive/temperature_D"] = temperature.detach()
        return out

    def _result(self, values: dict, side: str, weights: Optional[dict] = None) -> dict:
        weights = weights or self.weights
        out = {"total": sum(weights[name] * value for name, value in values.items())}
        for name, value in values.items():
            out[f"Loss/{side}/contrastive/{name}"] = value.detach()
        return out


def _half(ids, h):
    return None if ids is None else ids[:h]
