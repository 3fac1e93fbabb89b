"""The GAN objective of the four phases (Gmain, Greg, Dmain, Dreg) as named loss tensors.

The training step calls one entry point, as StyleGAN3's loss.accumulate_gradients(phase, ...):

    out = objective.phase_loss(phase, inputs)     # phase: textgan.losses.phases.Phase; inputs: PhaseInputs

which routes to the phase's loss (G_main, G_reg, D_main, D_reg; public, and tested one by one).

The training loop owns the networks, the DeepSpeed engines and every backward/step. It hands the
objective two callables, as StyleGAN2-ADA's run_G / run_D do:

    G_fn(z, c) -> img or (img, ws)          D_fn(img, c) -> logits [N] / [N, 1], or (logits, features)

so that it can decide how each network is called (through the engine, or as the raw module with D
frozen in the G phase; tests/test_engines.py pins why). The objective applies the augmentation pipe to every
image D sees (reals, fakes, mismatched reals, and the reals of R1 and the fakes of R2, whose gradient is then
taken through the augmentation w.r.t. the un-augmented image, as StyleGAN2-ADA does).

With loss.kind=rpgan (the relativistic pairing loss of R3GAN) the adversarial terms score pairs: sample i of the
fakes against sample i of the reals, both under the same condition (G_main and D_main say how the pairs are
formed), and Dreg adds R2, the R1 penalty on fakes (loss.r2_gamma; resolve_r2_gamma).

Each method returns a dict of tensors: "total" (the scalar to backpropagate, with its graph),
"Loss/*" (the terms, detached, for logging) and "Stats/*" (detached diagnostics).
"""

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from textgan.losses.adversarial import (check_kind, d_loss_fake, d_loss_real, d_loss_relativistic, g_loss,
                                         g_loss_relativistic, is_paired)
from textgan.losses.mismatch import check_negatives, mismatched_captions
from textgan.losses.phases import Phase, PhaseInputs, iteration_phases
from textgan.losses.regularizers import l2_penalty, orthogonal_penalty, path_length_penalty, r1_penalty


# Greg's output holds the path length's new running mean under this key; the caller keeps it.
PL_MEAN_KEY = "Stats/G/pl_mean"


def _images(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _logits(out) -> torch.Tensor:
    """D_fn may return logits or (logits, features); losses want [N]."""
    logits = out[0] if isinstance(out, (tuple, list)) else out
    return logits.reshape(logits.shape[0])


def resolve_r2_gamma(loss_cfg) -> float:
    """The R2 weight a config means: loss.r2_gamma when set; unset (None), loss.r1_gamma with loss.kind=rpgan
    (R3GAN penalizes reals and fakes alike, with one gamma) and 0 with the other kinds (StyleGAN2's R1 only)."""
    r2_gamma = getattr(loss_cfg, "r2_gamma", None)
    if r2_gamma is not None:
        return float(r2_gamma)
    return float(loss_cfg.r1_gamma) if is_paired(loss_cfg.kind) else 0.0


def _check_interval(interval: int, key: str) -> int:
    if interval < 1:
        raise ValueError(f"{key} is {interval}: a lazy regularization phase runs every interval >= 1 steps.")
    return interval


@dataclass
class ContrastiveBatch:
    """What the contrastive terms need besides the images (textgan.losses.contrastive_terms):
    c: each generator row's clean caption embedding (no text noise), c_het: another caption of the
    same image, ids: image ids, reals: each row's real image, real_features(structure) -> the
    frozen towers' features of `reals` ("clip", "perceptual"; precomputed or computed, no grad)."""

    c: torch.Tensor
    c_het: Optional[torch.Tensor] = None
    ids: Optional[torch.Tensor] = None
    reals: Optional[torch.Tensor] = None
    real_features: Optional[Callable] = None


class GANObjective:
    """Built from the config's `loss` section (TrainConfig.loss or any object with the same fields),
    an augmentation module (textgan.augment.build_augment) or None, and optionally the contrastive
    terms (textgan.losses.contrastive_terms.ContrastiveTerms; None or inactive: the base model)."""

    def __init__(self, loss_cfg, augment_pipe: Optional[nn.Module] = None, contrastive=None):
        self.kind = check_kind(loss_cfg.kind)
        self.paired = is_paired(self.kind)
        self.r1_gamma = float(loss_cfg.r1_gamma)
        self.r2_gamma = resolve_r2_gamma(loss_cfg)
        self.pl_weight = float(loss_cfg.pl_weight)
        self.pl_decay = float(loss_cfg.pl_decay)
        self.pl_batch_shrink = int(loss_cfg.pl_batch_shrink)
        if self.pl_batch_shrink < 1:
            raise ValueError(f"config key 'loss.pl_batch_shrink' must be >= 1 (1: the whole batch), "
                             f"got {self.pl_batch_shrink}.")
        self.matching_aware = float(loss_cfg.matching_aware)
        self.matching_negatives = check_negatives(getattr(loss_cfg, "matching_negatives", "roll"))
        self.ortho_reg = float(loss_cfg.ortho_reg)
        self.weight_decay = float(loss_cfg.weight_decay)
        for key in ("r1_gamma", "r2_gamma", "pl_weight", "matching_aware", "ortho_reg", "weight_decay"):
            if getattr(self, key) < 0:
                raise ValueError(f"config key 'loss.{key}' must be >= 0 (0 disables it), got {getattr(self, key)}.")
        self.augment_pipe = augment_pipe
        self.contrastive = contrastive if contrastive is not None and contrastive.active else None

    # Phases the loop can skip altogether when their weight is zero.
    @property
    def uses_pl(self) -> bool:
        return self.pl_weight > 0

    @property
    def uses_r1(self) -> bool:
        return self.r1_gamma > 0

    @property
    def uses_r2(self) -> bool:
        return self.r2_gamma > 0

    def phases(self, G_reg_interval: int, D_reg_interval: int) -> list:
        """This objective's phases of one iteration, in order (a regularizer with weight 0 has none; Dreg
        runs when R1 or R2 has a weight)."""
        return iteration_phases(G_reg_interval, D_reg_interval, self.uses_pl, self.uses_r1 or self.uses_r2)

    def phase_loss(self, phase: Phase, inputs: PhaseInputs) -> dict:
        """The loss dict of one micro-batch of `phase` ("total", "Loss/..", "Stats/.."); the lazy
        regularizers are scaled by phase.interval. Greg's new path-length mean: out[PL_MEAN_KEY]."""
        i = inputs
        if phase.key == ("G", "main"):
            # rpgan pairs fake row j with the real image that D's caption of row j describes. In the paired
            # layout of heterologous pairs (textgan/train/micro_batch.py) row h + i is generated from another
            # caption of real i, so that image is pairs.reals[j], not reals[j]; otherwise they are the same.
            reals = i.pairs.reals if i.pairs is not None and i.pairs.reals is not None else i.reals
            return self.G_main(i.G_fn, i.D_fn, i.z, i.c if i.c_G is None else i.c_G, c_for_D=i.c,
                               G_module=i.G_module, pairs=i.pairs, heads=i.heads, reals=reals)
        if phase.key == ("G", "reg"):
            return self.G_reg(i.G_fn, i.z, i.c, i.pl_mean, phase.interval, mean_fn=i.mean_fn)[0]
        if phase.key == ("D", "main"):
            return self.D_main(i.G_fn, i.D_fn, i.reals, i.c, i.z, D_module=i.D_module, c_G=i.c_G, ids=i.ids)
        return self.D_reg(i.D_fn, i.reals, i.c, interval=phase.interval, G_fn=i.G_fn, z=i.z, c_G=i.c_G)

    def run_D(self, D_fn: Callable, img: torch.Tensor, c: torch.Tensor, return_features: bool = False):
        """Augment (if a pipe is set), then D; logits [N] (or (logits, D's pooled features))."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        if not return_features:
            return _logits(D_fn(img, c))
        logits, features = D_fn(img, c, return_features=True)
        return _logits(logits), features

    def _uses_D_space(self) -> bool:
        return self.contrastive is not None and self.contrastive.uses("D")

    def _add(self, out: dict, total, terms: dict):
        """Merge a term dict ({"total": ..., "Loss/..": ...}) into `out`; returns the new total."""
        if not terms:
            return total
        terms = dict(terms)
        total = total + terms.pop("total")
        out.update(terms)
        return total

    def _weight_terms(self, module: Optional[nn.Module], side: str, ortho: bool) -> dict:
        """Optional weight penalties of one network, each already multiplied by its config weight."""
        terms = {}
        wanted = {"ortho": self.ortho_reg if ortho else 0.0, "l2": self.weight_decay}
        if any(w > 0 for w in wanted.values()) and module is None:
            raise ValueError(
                f"loss.ortho_reg / loss.weight_decay are set: pass {side}_module= (the raw {side} network) "
                f"so that its weights can be penalized."
            )
        if wanted["ortho"] > 0:
            terms["ortho"] = (orthogonal_penalty(module), wanted["ortho"])
        if wanted["l2"] > 0:
            # weight_decay / 2 * ||W||^2 has gradient weight_decay * W, torch.optim's convention.
            terms["l2"] = (l2_penalty(module), wanted["l2"] / 2)
        return terms

    def G_main(self, G_fn, D_fn, z, c, c_for_D=None, G_module: Optional[nn.Module] = None,
               pairs: Optional[ContrastiveBatch] = None, heads: Optional[nn.Module] = None,
               reals: Optional[torch.Tensor] = None) -> dict:
        """Loss/G/adv = mean g_loss(D(aug(G(z, c)), c_D)), c_D = c_for_D or c (D's condition: the caption
        before text noise). With loss.kind=rpgan: mean g_loss_relativistic(D(aug(reals), c_D), D(aug(G(z, c)), c_D)),
        the real logits under no_grad; reals[j] is the real image paired with fake row j, the one c_D[j]
        describes, so both sides of a pair are scored under the same condition and differ only in the image.
        Plus loss.ortho_reg * orthogonal penalty (Loss/G/ortho) and loss.weight_decay / 2 * l2 (Loss/G/l2)
        of G_module's weights when set; plus the weighted contrastive terms (Loss/G/contrastive/*, each
        unweighted; their weighted sum as Loss/G/contrastive/total) when they are on, which read D's
        features from the same forward (pairs: ContrastiveBatch; heads: D's contrastive heads).
        total = their sum. D must be frozen by the caller (D_fn is called, nothing else)."""
        img = _images(G_fn(z, c))
        c_D = c if c_for_D is None else c_for_D
        D_features = None
        if self._uses_D_space():
            logits, D_features = self.run_D(D_fn, img, c_D, return_features=True)
        else:
            logits = self.run_D(D_fn, img, c_D)
        if self.paired:
            if reals is None:
                raise ValueError("loss.kind=rpgan: G_main needs reals= (the real image paired with each fake row)")
            # G cannot move the real logits and D does not learn in G's phase: no graph for them.
            with torch.no_grad():
                real_logits = self.run_D(D_fn, reals.detach(), c_D)
            adv = g_loss_relativistic(real_logits, logits).mean()
        else:
            adv = g_loss(logits, self.kind).mean()
        out = {"Loss/G/adv": adv.detach(), "Stats/G/logits_fake": logits.detach().mean()}
        total = adv
        if self.contrastive is not None:
            if pairs is None:
                raise ValueError("contrastive terms are on: G_main needs pairs= (a ContrastiveBatch)")
            with_contrastive = self._add(out, total, self.contrastive.generator_terms(
                img, pairs.c, pairs.c_het, pairs.ids, D_features=D_features, heads=heads,
                real=lambda structure: self._real_features(structure, pairs, D_fn)))
            out["Loss/G/contrastive/total"] = (with_contrastive - total).detach()  # weighted; the tick line shows it
            total = with_contrastive
        for name, (value, weight) in self._weight_terms(G_module, "G", ortho=True).items():
            out[f"Loss/G/{name}"] = value.detach()
            total = total + weight * value
        out["total"] = total
        return out

    def _real_features(self, structure: str, pairs: ContrastiveBatch, D_fn) -> torch.Tensor:
        """Features of the rows' real images in one structure's space (no gradient: targets)."""
        with torch.no_grad():
            if structure == "D":  # as D sees images: augmented
                reals = self.augment_pipe(pairs.reals) if self.augment_pipe is not None else pairs.reals
                return D_fn.features(reals)
            return pairs.real_features(structure)

    def G_reg(self, G_fn, z, c, pl_mean, interval: int, generator=None, mean_fn=None):
        """Lazy path-length regularization, every `interval` (schedule.G_reg_interval) steps, on the first
        pl_batch_size(len(z)) samples of z and c (loss.pl_batch_shrink).
        total = mean(pl penalty) * loss.pl_weight * interval (+ img[:, 0, 0, 0].sum() * 0, which
        puts every G parameter in the graph: ZeRO-2/3 expect a gradient for each of them).
        Returns (dict, new_pl_mean); the caller stores new_pl_mean (an EMA with loss.pl_decay).
        `generator` seeds the image-space noise; `mean_fn` averages the length mean across ranks."""
        if not self.uses_pl:
            raise ValueError("loss.pl_weight is 0: skip the Greg phase instead of calling G_reg.")
        _check_interval(interval, "schedule.G_reg_interval")
        n = self.pl_batch_size(z.shape[0])
        out = G_fn(z[:n], c[:n])
        if not isinstance(out, (tuple, list)) or len(out) < 2:
            raise ValueError("G_reg needs G_fn(z, c) to return (img, ws): the penalty differentiates w.r.t. ws.")
        img, ws = out[0], out[1]
        penalty, new_pl_mean, lengths = path_length_penalty(img, ws, pl_mean, self.pl_decay, generator, mean_fn)
        pl = penalty.mean()
        total = pl * (self.pl_weight * interval) + img[:, 0, 0, 0].sum() * 0
        stats = {
            "Loss/G/pl": pl.detach(),
            "Stats/G/pl_length": lengths.mean(),
            PL_MEAN_KEY: new_pl_mean.detach().reshape(-1)[0],
            "total": total,
        }
        return stats, new_pl_mean

    def pl_batch_size(self, batch: int) -> int:
        """How many of a micro-batch's `batch` samples the path-length phase runs G on."""
        return max(1, batch // self.pl_batch_shrink)

    def D_main(self, G_fn, D_fn, reals, c, z, c_mismatch=None, D_module: Optional[nn.Module] = None,
               c_G: Optional[torch.Tensor] = None, ids: Optional[torch.Tensor] = None) -> dict:
        """Loss/D/adv_fake = mean d_loss_fake(D(aug(G(z, c)), c)) with G run under no_grad (the fakes
        carry no graph into G); Loss/D/adv_real = mean d_loss_real(D(aug(reals), c)).
        With loss.matching_aware > 0: Loss/D/matching = mean d_loss_fake(D(aug(reals), c_mismatch)),
        the real image with another sample's caption counted as fake (Reed et al. 2016's GAN-CLS);
        c_mismatch defaults to mismatched_captions(c, loss.matching_negatives): c rolled by one sample (roll)
        or each sample's most similar other caption (nearest). With loss.weight_decay > 0: Loss/D/l2 of D_module.
        With the D contrastive structure on: D's heads (D_module.contrastive) on the real pairs, from
        the real forward's features (Loss/D/contrastive/D_it, weight S_D C_it; ids: image ids).
        c_G: the generator's condition when it differs from D's (text noise); default c.
        total = adv_fake + adv_real + matching_aware * matching + weight_decay / 2 * l2 (+ contrastive).
        Stats/D/real_sign = mean sign(real logits), ADA's overfitting heuristic r_t.

        loss.kind=rpgan: Loss/D/adv = mean d_loss_relativistic(real_i, fake_i) replaces adv_real and adv_fake
        (a pair's loss does not split into a real and a fake half). Fake i is generated from sample i's caption
        and D scores both under c_i, so the pair differs only in the image. Loss/D/matching becomes
        mean d_loss_relativistic(D(aug(real_i), c_i), D(aug(real_i), c_mismatch_i)): the same real image
        with its own caption against a wrong one. Stats/D/real_sign = mean sign(real_i - fake_i): under
        this loss only logit differences mean anything (D's output may drift by any constant), so the
        sign of a real logit alone would steer ADA by that drift; the pair's sign is how often D ranks
        the real above the fake, which like r_t nears 1 as D overfits."""
        with torch.no_grad():
            fakes = _images(G_fn(z, c if c_G is None else c_G))
        fake_logits = self.run_D(D_fn, fakes.detach(), c)
        real_features = None
        if self._uses_D_space():
            real_logits, real_features = self.run_D(D_fn, reals.detach(), c, return_features=True)
        else:
            real_logits = self.run_D(D_fn, reals.detach(), c)
        if self.paired:
            adv = d_loss_relativistic(real_logits, fake_logits).mean()
            total = adv
            out = {"Loss/D/adv": adv.detach()}
        else:
            adv_fake = d_loss_fake(fake_logits, self.kind).mean()
            adv_real = d_loss_real(real_logits, self.kind).mean()
            total = adv_fake + adv_real
            out = {"Loss/D/adv_fake": adv_fake.detach(), "Loss/D/adv_real": adv_real.detach()}
        if self.matching_aware > 0:
            if c_mismatch is None:
                c_mismatch = mismatched_captions(c, self.matching_negatives)
            mismatch_logits = self.run_D(D_fn, reals.detach(), c_mismatch)
            if self.paired:
                matching = d_loss_relativistic(real_logits, mismatch_logits).mean()
            else:
                matching = d_loss_fake(mismatch_logits, self.kind).mean()
            out["Loss/D/matching"] = matching.detach()
            total = total + self.matching_aware * matching
        for name, (value, weight) in self._weight_terms(D_module, "D", ortho=False).items():
            out[f"Loss/D/{name}"] = value.detach()
            total = total + weight * value
        if real_features is not None:
            total = self._add(out, total, self.contrastive.discriminator_terms(
                real_features, c, ids, heads=D_module.contrastive))
        real_detached = real_logits.detach()
        sign_of = real_detached - fake_logits.detach() if self.paired else real_detached
        out["Stats/D/real_sign"] = sign_of.sign().mean()
        out["Stats/D/logits_real"] = real_detached.mean()
        out["Stats/D/logits_fake"] = fake_logits.detach().mean()
        out["total"] = total
        return out

    def D_reg(self, D_fn, reals, c, gamma: Optional[float] = None, interval: int = 1, G_fn=None, z=None,
              c_G: Optional[torch.Tensor] = None, r2_gamma: Optional[float] = None) -> dict:
        """Lazy R1, every `interval` (schedule.D_reg_interval) steps: Loss/D/r1 = mean ||d D(aug(x)) / d x||^2
        over the reals; total = r1 * gamma / 2 * interval (+ logits.sum() * 0 so that every D parameter
        is in the graph). gamma defaults to loss.r1_gamma. D_fn must be the raw module's forward (a
        separate forward from Dmain's: double backward through a DeepSpeed engine's output breaks).

        R2 (r2_gamma, default resolve_r2_gamma of the config) when > 0: the same penalty, computed the same
        way, on fakes G_fn(z, c_G or c) made for this phase under no_grad (R2 regularizes D, not G) and
        scored under c: Loss/D/r2, adding r2 * r2_gamma / 2 * interval. Reals and fakes go through D in
        separate forwards, as in Dmain (minibatch-stddev would mix them). R1 is left out when its own
        gamma is 0 and R2 is on (a Dreg phase for R2 alone)."""
        gamma = self.r1_gamma if gamma is None else float(gamma)
        r2_gamma = self.r2_gamma if r2_gamma is None else float(r2_gamma)
        _check_interval(interval, "schedule.D_reg_interval")
        out, total = {}, 0.0
        if gamma > 0 or r2_gamma <= 0:
            reals = reals.detach().requires_grad_(True)
            logits = self.run_D(D_fn, reals, c)
            r1 = r1_penalty(logits, reals).mean()
            total = r1 * (gamma / 2 * interval) + logits.sum() * 0
            out.update({"Loss/D/r1": r1.detach(), "Stats/D/logits_real_reg": logits.detach().mean()})
        if r2_gamma > 0:
            if G_fn is None or z is None:
                raise ValueError("R2 is on (loss.r2_gamma, or loss.kind=rpgan): D_reg needs G_fn= and z= to make fakes")
            with torch.no_grad():
                fakes = _images(G_fn(z, c if c_G is None else c_G))
            fakes = fakes.detach().requires_grad_(True)
            fake_logits = self.run_D(D_fn, fakes, c)
            r2 = r1_penalty(fake_logits, fakes).mean()
            total = total + r2 * (r2_gamma / 2 * interval) + fake_logits.sum() * 0
            out.update({"Loss/D/r2": r2.detach(), "Stats/D/logits_fake_reg": fake_logits.detach().mean()})
        out["total"] = total
        return out
