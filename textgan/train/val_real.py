"""D's loss on held-out real images against its loss on training reals, once per tick (data.val_shards).

    val_real = ValRealLoss.from_config(cfg, setup)   # at the start: reads the two fixed sets (or does nothing)
    val_real.report(collector)                       # at every tick, before the tick's summary

A D that memorizes its training set scores training images as more real than held-out images of the same
distribution: `Loss/D/val_real` (held-out) then climbs away from `Loss/D/train_real` (training images). It is
the validation loss the research tracked: the symptom that ADA's overfitting heuristic r_t = E[sign(D(real))]
(textgan/augment/ada.py) can only infer from the training batches, measured against images D never saw.

The two sets are fixed: the first data.val_images samples of data.val_shards and of data.shards, in manifest
and tar order, each with its evaluation caption (drawn from the image id, as every evaluation draws it), read
by a reader of their own, so the training loader's order, position and resume are untouched. The same images
every tick make the ticks comparable, and a resumed run rebuilds exactly the sets of the uninterrupted one.

What is measured: per image, the loss the Dmain phase gives D on a real image (d_loss_real of the configured
loss.kind) with c computed as the training step computes it (setup.c_encoder, one batch at a time), no
gradient, no augmentation, the current D (not an average), in eval mode (a D with batch statistics would
otherwise move them: the measurement must not change training), then put back in the modes it was in.
With loss.kind=rpgan, whose loss scores a real image only against a fake, the per-image value is -D(x): only
differences of D's logits mean anything there and D's output may drift by a constant, which the val - train
gap of -D(x) cancels and the gap of any curved loss of D(x) would not.
D sees batches of schedule.batch_gpu consecutive images, as in training: its minibatch-stddev layer makes a
sample's logit depend on the rest of its batch, so the batches are part of the definition.

The work is split across ranks: batch b of a set on rank b % world (as the metrics split their batches).
Each rank reports its images' losses and the tick's summary sums them over ranks, so the mean is over all
val_images images, and each batch is the very batch a single process would run: every image's loss equals a
single process's, and the mean can differ only by the order of a float64 sum, in the last bits of a double
(tests/test_val_real.py compares 2 ranks on ZeRO-3 with one process). Splitting rather than every rank doing
all of it keeps the cost per tick at 1 / world of the whole on a big job, and each rank holds only its own
batches. Every rank runs as many D forwards as the rank with the most batches (a rank with
fewer runs throw-away ones): under ZeRO-3 each forward gathers D's parameters collectively, so ranks that run
different numbers of forwards would hang.
"""

import time
from dataclasses import dataclass, field
from typing import List

import torch

from textgan.data.decode import to_float_image
from textgan.data.loading.loader import eval_loader
from textgan.data.manifest import load_manifest
from textgan.errors import UsageError
from textgan.losses.adversarial import d_loss_real, is_paired

VAL_STAT = "Loss/D/val_real"
TRAIN_STAT = "Loss/D/train_real"
TIMING_STAT = "Timing/val_real_sec"


def first_batches(shards_dir: str, n: int, batch_size: int, key: str = "data.val_shards") -> List[dict]:
    """The first n decodable samples of a shard directory (manifest order, tar order; damaged samples are
    skipped as everywhere) as loader batches of batch_size consecutive samples, the last one possibly shorter.
    UsageError naming data.val_images when the directory holds fewer (`key` names the directory's key)."""
    batches, taken = [], 0
    if n > 0:
        for batch in eval_loader(shards_dir, batch_size, num_workers=0):  # one stream: plain file order
            keep = min(len(batch["key"]), n - taken)
            batches.append({k: v[:keep] for k, v in batch.items()})
            taken += keep
            if taken == n:
                break
    if taken < n:
        raise UsageError(f"config key 'data.val_images' is {n}, but {key} ({shards_dir}) holds only {taken} "
                         f"readable samples; set data.val_images={taken} or less")
    return batches


@dataclass
class FixedSet:
    """One set's batches on this rank: uint8 pixels on the CPU, c on the training device."""

    stat: str  # the name its mean loss is reported under
    image_shape: tuple  # [3, R, R]: what a throw-away forward feeds D
    forwards: int  # D forwards every rank runs for this set: the most batches any rank holds
    pixels: List[torch.Tensor] = field(default_factory=list)
    conditions: List[torch.Tensor] = field(default_factory=list)


def fixed_set(stat: str, batches: List[dict], c_encoder, rank: int, world_size: int, device, dtype,
              drop_features: bool = False) -> FixedSet:
    """This rank's share of a set's batches (batch b on rank b % world_size), with c as training computes it.
    drop_features: leave out the batches' precomputed text embeddings (clip_txt), which c_encoder would
    otherwise read, because they were made by another tower than the training shards' (c is computed then)."""
    height, width, channels = batches[0]["pixels"].shape[1:]
    out = FixedSet(stat, (channels, height, width), forwards=-(-len(batches) // world_size))
    for batch in batches[rank::world_size]:
        if drop_features:
            batch = {k: v for k, v in batch.items() if not k.startswith("clip_txt")}
        out.pixels.append(batch["pixels"].contiguous())
        out.conditions.append(c_encoder(batch).to(device, dtype))
    return out


def same_text_features(manifest_a: dict, manifest_b: dict) -> bool:
    """Whether two shard sets' precomputed text embeddings (if any) come from the same tower."""
    def clip(manifest):
        return ((manifest.get("settings") or {}).get("features") or {}).get("clip")

    return clip(manifest_a) == clip(manifest_b)


def real_image_loss(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Per image [N]: d_loss_real of `kind`, or -logit for a paired kind (see the module docstring)."""
    return -logits.reshape(-1) if is_paired(kind) else d_loss_real(logits, kind)


class ValRealLoss:
    """The two fixed sets of one rank and D to measure on them. Built with from_config (a no-op object
    when data.val_shards is unset); report() is collective: every rank calls it at the same ticks."""

    def __init__(self, sets: List[FixedSet], D, kind: str, device, dtype):
        self.sets, self.D, self.kind, self.device, self.dtype = sets, D, kind, device, dtype

    @classmethod
    def from_config(cls, cfg, setup) -> "ValRealLoss":
        """Read both fixed sets (every rank reads them, keeps its share). setup: build_training's result."""
        data, runtime, engines = cfg.data, setup.runtime, setup.engines
        if data.val_shards is None:
            return cls([], None, setup.objective.kind, runtime.device, engines.dtype)
        n, batch_gpu = data.val_images, cfg.schedule.batch_gpu
        val_batches = first_batches(data.val_shards, n, batch_gpu)
        train_batches = first_batches(data.shards, n, batch_gpu, key="data.shards")
        # The conditioner reads precomputed embeddings after checking the training shards' tower only.
        foreign = not same_text_features(load_manifest(data.val_shards), load_manifest(data.shards))
        args = (setup.c_encoder, runtime.rank, runtime.world_size, runtime.device, engines.dtype)
        sets = [fixed_set(VAL_STAT, val_batches, *args, drop_features=foreign),
                fixed_set(TRAIN_STAT, train_batches, *args)]
        return cls(sets, engines.D.module, setup.objective.kind, runtime.device, engines.dtype)

    @property
    def enabled(self) -> bool:
        return bool(self.sets)

    @torch.no_grad()
    def losses(self, fixed: FixedSet) -> torch.Tensor:
        """This rank's per-image losses of one set [its images] (float32, on the device), in batch order."""
        out = []
        for pixels, c in zip(fixed.pixels, fixed.conditions):
            images = to_float_image(pixels.to(self.device)).to(self.dtype)
            out.append(real_image_loss(self.D(images, c).float(), self.kind))
        for _ in range(fixed.forwards - len(fixed.pixels)):  # throw-away forwards: see the module docstring
            self.D(torch.zeros([1, *fixed.image_shape], device=self.device, dtype=self.dtype),
                   torch.zeros([1, self.D.c_dim], device=self.device, dtype=self.dtype))
        return torch.cat(out) if out else torch.zeros([0], device=self.device)

    def report(self, collector) -> None:
        """Report both sets' per-image losses (and the seconds it took) to the tick's StatsCollector."""
        if not self.enabled:
            return
        start = time.time()
        modes = [(module, module.training) for module in self.D.modules()]
        self.D.eval()
        try:
            for fixed in self.sets:
                collector.report(fixed.stat, self.losses(fixed))
        finally:
            for module, training in modes:  # each module as it was (train() would set all alike)
                module.training = training
        if torch.device(self.device).type == "cuda":  # the kernels run asynchronously: time them, not their launch
            torch.cuda.synchronize(self.device)
        collector.report(TIMING_STAT, time.time() - start)
