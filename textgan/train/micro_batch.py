"""One micro-batch of reals and captions, and the inputs each phase derives from it.

The base model needs the real images and the text condition c. Text noise (contrastive.text_noise,
Lafite's text-side augmentation) perturbs only the generator's copy of c. With contrastive terms on,
the micro-batch also carries each sample's other caption, its image id and (lazily, once per
micro-batch) its real images' features in the frozen towers' spaces; and when heterologous
image-image pairs are on, G's batch is laid out in two halves: row h + i is generated from another
caption of row i's real image, so those pairs cost no extra generator pass.
"""

from typing import Optional

import torch

from textgan.data.decode import to_float_image
from textgan.losses.contrastive_terms import noisy_condition
from textgan.losses.objective import ContrastiveBatch


def real_images(batch: dict, device) -> torch.Tensor:
    """The batch's real images as the networks take them, float [B, 3, R, R] in [-1, 1], on `device`.
    Loader batches carry uint8 "pixels" [B, R, R, 3]: they travel (worker -> trainer -> device) at a quarter of
    float32's bytes and are converted on the device. Batches made in memory (tests that inject non-finite
    images, benchmarks) may carry the float "image" itself."""
    if "image" in batch:
        return batch["image"].to(device)
    return to_float_image(batch["pixels"].to(device))


class MicroBatch:
    def __init__(self, batch: dict, c_encoder, device, dtype, terms=None, real_source=None):
        self.batch = batch
        self.reals = real_images(batch, device).to(dtype)
        self.c = c_encoder(batch).to(device, dtype)
        self.terms = terms
        self.real_source = real_source
        self.c_het: Optional[torch.Tensor] = None
        self.ids: Optional[torch.Tensor] = None
        if terms is not None:
            self.ids = torch.as_tensor(batch["image_id"]).to(device)
            if terms.needs_alt_captions:
                self.c_het = c_encoder.alt(batch).to(device, dtype)
        self._features = {}

    def real_features(self, structure: str) -> torch.Tensor:
        """Features of this micro-batch's real images, computed (or read) once for all phases."""
        if structure not in self._features:
            self._features[structure] = self.real_source.features(structure, self.batch, self.reals)
        return self._features[structure]

    def generator_inputs(self, text_noise: float):
        """(c for G, c for D, ContrastiveBatch or None) of a phase that generates images."""
        if self.terms is None:
            return noisy_condition(self.c, text_noise), self.c, None
        n = self.c.shape[0]
        if self.terms.paired:
            h = n // 2
            rows = torch.cat([torch.arange(h), torch.arange(h)]).to(self.c.device)
            c = torch.cat([self.c[:h], self.c_het[:h]])
            c_het = torch.cat([self.c_het[:h], self.c[:h]])
        else:
            rows = torch.arange(n, device=self.c.device)
            c, c_het = self.c, self.c_het
        pairs = ContrastiveBatch(c=c, c_het=c_het, ids=self.ids[rows], reals=self.reals[rows],
                                 real_features=lambda structure: self.real_features(structure)[rows])
        return noisy_condition(c, text_noise), c, pairs
