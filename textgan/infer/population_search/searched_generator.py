"""A generator whose every image is the best of a search: what `textgan eval --search` measures, so that FID,
KID, CLIP score or shapes_alignment of searched images are computed by exactly the protocol of plain samples
(the same reference, the same captions and counts, the same extractor).

    searched = SearchedGenerator(model, settings, scorer)
    report = evaluator.run(searched, searched.encode, ...)     # metrics call searched(z, searched.encode(captions))

The metrics hand G only (z, c). encode() embeds the captions with the run's text tower, as plain evaluation
does, and remembers which caption each embedding row came from; G then searches that caption. Each row's
search is seeded from its z (its first value's bits), so two rows with the same caption (a caption drawn twice,
or several latents per caption for diversity) run different searches instead of returning one image twice.
"""

import struct

import torch

from textgan.infer.population_search.loop import search_prompt


class SearchedGenerator:
    def __init__(self, model, settings, scorer):
        self.model, self.settings, self.scorer = model, settings, scorer
        self.z_dim = int(model.G.z_dim)
        self.img_resolution = int(model.G.img_resolution)
        self.captions = {}  # embedding row bytes -> caption
        self.searches = 0
        self.evaluations = 0

    def encode(self, captions) -> torch.Tensor:
        c = self.model.embed(list(captions))
        for caption, row in zip(captions, c):
            self.captions[row.detach().cpu().numpy().tobytes()] = caption
        return c

    def __call__(self, z, c, noise_mode="const", **_) -> torch.Tensor:
        """[N, 3, R, R] float images in [-1, 1] on c's device: row i is the best image of a search for row i's
        caption (kept[0], rendered one forward per image)."""
        images = []
        for z_row, c_row in zip(z, c):
            caption = self.captions[c_row.detach().cpu().numpy().tobytes()]
            seed = struct.unpack("<I", struct.pack("<f", float(z_row[0])))[0] % 4096  # bits of z: a row's own seed
            settings = type(self.settings)(**{**self.settings.to_dict(), "seed": seed, "keep": 1, "baseline": False})
            result = search_prompt(self.model, caption, settings.checked(), self.scorer)
            self.searches += 1
            self.evaluations += result.evaluations
            images.append(torch.from_numpy(result.kept[0].image).permute(2, 0, 1).float() / 127.5 - 1.0)
        return torch.stack(images).to(c.device)
