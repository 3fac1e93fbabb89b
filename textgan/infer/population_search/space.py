"""The space a search moves in: genomes (flat float vectors) -> images of one prompt.

    space = LatentSpace(model, prompt, space="z", psi=1.0)
    genomes = space.seeded(range(100))          # [100, dim]: seed s gives `textgan generate`'s z of seed s
    images = space.decode(genomes)              # [100, 3, R, R] on the model's device, batched (search)
    exact = space.render(genomes[:4])           # one forward per image: the pixels `textgan generate` makes

- "z": a genome is the generator's z (both architectures). Its norm is kept within the prior's
  [0.1%, 99.9%] chi quantiles (`bound`): a search cannot push z to norms the generator never saw, while
  every prior sample but one in 500 passes unchanged.
- "w+" (StyleGAN2): one z per layer, each mapped with the prompt and truncated toward the truncation centre
  like a plain sample, so every candidate's ws stay within the truncation bounds of the learned w
  distribution (a search directly in w can leave it and find images the generator never learned).

decode() runs the generator on batches (a search needs the throughput); render() gives the kept images the
exact pixels of one forward per image (see textgan.infer.generation), so a kept genome's PNG is
reproducible. The two differ by float rounding only (below one grey level, measured in the tests).
"""

import math

import torch

from textgan.errors import UsageError
from textgan.infer.generation import latents, synthesize

# Standard normal quantile of 0.999: the z norm bounds are the chi distribution's 0.1% and 99.9% points.
Z_999 = 3.090232


def chi_bounds(dim: int) -> tuple:
    """(low, high) norm of a `dim`-dimensional standard normal vector at its 0.1% / 99.9% quantiles
    (Wilson-Hilferty's cube-root approximation of chi-square, accurate to <1% from dim 8 up)."""
    k = float(dim)
    spread = Z_999 * math.sqrt(2.0 / (9.0 * k))
    lo = k * max(1.0 - 2.0 / (9.0 * k) - spread, 1e-6) ** 3
    hi = k * (1.0 - 2.0 / (9.0 * k) + spread) ** 3
    return math.sqrt(lo), math.sqrt(hi)


class LatentSpace:
    def __init__(self, model, prompt: str, space: str = "z", psi: float = 1.0, trunc_cutoff=None,
                 centre: str = "conditional", batch: int = 256):
        if space == "w+" and not model.has_styles:
            raise UsageError(f"--space w+: model.arch={model.arch} has no styles (ws); use --space z")
        self.model, self.prompt, self.space = model, prompt, space
        self.psi, self.trunc_cutoff, self.batch = float(psi), trunc_cutoff, int(batch)
        self.z_dim = int(model.G.z_dim)
        self.layers = int(model.G.num_ws) if space == "w+" else 1
        self.dim = self.z_dim * self.layers
        self.c = model.embed([prompt])  # [1, c_dim] on the model's device
        truncated = self.psi != 1 and model.has_styles
        self.w_avg = model.centre(prompt)[None] if truncated and centre == "conditional" else None
        self.low, self.high = chi_bounds(self.z_dim)

    def seeded(self, seeds) -> torch.Tensor:
        """[len(seeds), dim] prior genomes: seed s is `textgan generate --seeds s`'s z (in w+, every layer
        gets that z: the plain sample); the same on every device and in every batch."""
        return latents(seeds, self.z_dim).repeat(1, self.layers)

    def bound(self, genomes: torch.Tensor) -> torch.Tensor:
        """Each z (per layer in w+) with its norm clamped into the prior's [0.1%, 99.9%] range."""
        z = genomes.reshape(len(genomes), self.layers, self.z_dim)
        norm = z.norm(dim=2, keepdim=True).clamp_min(1e-12)
        return (z * (norm.clamp(self.low, self.high) / norm)).reshape(len(genomes), self.dim)

    def _ws(self, z: torch.Tensor) -> torch.Tensor:
        """w+ genomes -> ws [N, num_ws, w_dim]: layer i takes the i-th w of its own z (truncated like a sample)."""
        n = len(z)
        zs = z.reshape(n * self.layers, self.z_dim)
        c = self.c.expand(len(zs), -1)
        w_avg = None if self.w_avg is None else self.w_avg.expand(len(zs), -1)
        ws = self.model.G.mapping(zs, c, psi=self.psi, truncation_cutoff=self.trunc_cutoff, w_avg=w_avg)
        ws = ws.reshape(n, self.layers, self.layers, -1)
        return torch.diagonal(ws, dim1=1, dim2=2).permute(0, 2, 1)  # [n, layer, w_dim]: layer i of z_i

    @torch.no_grad()
    def decode(self, genomes: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, R, R] (float, on the model's device) of bounded genomes, `batch` per forward."""
        device = self.model.device
        out = []
        for part in genomes.split(self.batch):
            z = part.to(device)
            if self.space == "w+":
                out.append(self.model.G.synthesis(self._ws(z), noise_mode="const").float())
                continue
            c = self.c.expand(len(z), -1)
            kwargs = {}
            if self.psi != 1:
                kwargs = {"psi": self.psi, "truncation_cutoff": self.trunc_cutoff,
                          "w_avg": None if self.w_avg is None else self.w_avg.expand(len(z), -1)}
            out.append(self.model.G(z, c, noise_mode="const", **kwargs).float())
        return torch.cat(out)

    @torch.no_grad()
    def render(self, genomes: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, R, R] (float, CPU) made one forward per image: `textgan generate`'s pixels for a z."""
        if self.space == "z":
            c = self.c.expand(len(genomes), -1)
            w_avg = None if self.w_avg is None else self.w_avg.expand(len(genomes), -1)
            return synthesize(self.model, genomes, c, self.psi, self.trunc_cutoff, w_avg)
        return torch.cat([self.decode(g[None]).cpu() for g in genomes])
