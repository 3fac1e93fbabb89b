"""Images for (prompt, seed) pairs, reproducible to the pixel.

    from textgan.infer import load_model, generate
    model = load_model("runs/00000-demo")
    samples = generate(model, ["a red circle above a blue square"], seeds=range(8))
    samples[0].image          # uint8 [H, W, 3]; samples[0].prompt, samples[0].seed

The same model, prompt, seed and settings give the same pixels on the same device, whatever the
batch size, the order of the prompts or the other prompts of the call:
- z of a seed comes from its own torch.Generator on the CPU (as StyleGAN3's gen_images.py draws
  np.random.RandomState(seed).randn(1, z_dim)), so it is the same on every device and in every batch;
- each prompt is embedded on its own and its conditional centre is averaged on its own (Model.embed,
  Model.centre), noise inputs are the constant buffers (noise_mode="const");
- G runs once per image. Kernels pick their algorithm, hence their order of summation, by the batch
  shape: measured on the CPU, a StyleGAN2 image made in a batch of 1, 3 or 4 differs from the same
  image made in a batch of 16 by up to 6e-6, enough to move a pixel by one level. One image per
  forward pass costs nothing measurable on the CPU for StyleGAN2 (0.45 s vs 0.43 s for 16 demo-size
  images; the cGAN's batched pass is ~14x faster, but 16 demo images take 0.1 s either way; on a GPU
  a batched pass would be faster, and its bits would again depend on the batch). `batch` is how many
  images are prepared, converted and handed back per step.

synthesize() (explicit z and c) and the Model's caches are what a search over latents reuses.
"""

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import torch

from textgan.errors import UsageError
from textgan.infer.prompts import check_prompts
from textgan.train.grids import to_uint8

CENTRES = ("conditional", "global")
OUTPUTS = ("uint8", "float")


@dataclass(frozen=True)
class Sample:
    prompt_index: int  # position of the prompt in the call's prompt list
    prompt: str
    seed: int
    image: object  # uint8 numpy [H, W, 3], or float torch [3, H, W] in about [-1, 1] (output="float")


def latent(seed: int, z_dim: int) -> torch.Tensor:
    """z [1, z_dim] of `seed`, float32 on the CPU: the same on every device and in every batch."""
    return latents([seed], z_dim)


def latents(seeds, z_dim: int) -> torch.Tensor:
    """[len(seeds), z_dim]: row i is latent(seeds[i]). One generator re-seeded per seed (~3 us per seed instead
    of ~5 with a new one each time: a search draws up to 100,000 per prompt)."""
    g = torch.Generator()
    return torch.cat([torch.randn([1, z_dim], generator=g.manual_seed(int(s))) for s in seeds])


def check_truncation(model, psi: float = 1.0, trunc_cutoff: Optional[int] = None, centre: str = "conditional") -> None:
    """UsageError unless the truncation settings make sense for `model`."""
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not 0.0 <= psi <= 1.0:
        raise UsageError(f"--trunc {psi}: psi must be within [0, 1] (1: no truncation, 0: the centre itself)")
    if centre not in CENTRES:
        raise UsageError(f"--centre {centre!r}: choose one of {', '.join(CENTRES)}")
    if not model.has_styles:
        if psi != 1:
            raise UsageError(f"--trunc {psi}: model.arch={model.arch} has no styles (w) to truncate; leave --trunc "
                             "at 1 for this model (only model.arch=stylegan2 supports truncation)")
        if trunc_cutoff is not None:
            raise UsageError(f"--trunc-cutoff {trunc_cutoff}: model.arch={model.arch} has no styles (w); drop "
                             "--trunc-cutoff for this model")
        return
    if trunc_cutoff is not None and not (isinstance(trunc_cutoff, int) and 1 <= trunc_cutoff <= model.G.num_ws):
        raise UsageError(f"--trunc-cutoff {trunc_cutoff}: give a number of layers in 1..{model.G.num_ws} "
                         f"(this generator has {model.G.num_ws} ws), or leave it out to truncate all")


@torch.no_grad()
def synthesize(model, z: torch.Tensor, c: torch.Tensor, psi: float = 1.0, trunc_cutoff: Optional[int] = None,
               w_avg: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Float images [N, 3, R, R] on the CPU for latents z [N, z_dim] and embeddings c [N, c_dim], one forward pass
    per row (see the module docstring). w_avg: None (the global centre) or [N, w_dim] per-row centres; only
    used when psi != 1."""
    device = model.device
    images = []
    for i in range(len(z)):
        kwargs = {}
        if psi != 1:
            kwargs = {"psi": psi, "truncation_cutoff": trunc_cutoff,
                      "w_avg": None if w_avg is None else w_avg[i:i + 1].to(device)}
        img = model.G(z[i:i + 1].to(device), c[i:i + 1].to(device), noise_mode="const", **kwargs)
        images.append(img.float().cpu())
    return torch.cat(images)


def iter_generate(model, prompts: Sequence[str], seeds: Sequence[int], psi: float = 1.0,
                  trunc_cutoff: Optional[int] = None, centre: str = "conditional", batch: int = 8,
                  output: str = "uint8") -> Iterator[List[Sample]]:
    """generate() one step (at most `batch` samples) at a time, prompt by prompt, seed by seed."""
    prompts = check_prompts(prompts)
    seeds = [int(s) for s in seeds]
    check_truncation(model, psi, trunc_cutoff, centre)
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if int(batch) < 1:
        raise UsageError(f"--batch {batch}: must be at least 1")
    pairs = [(i, p, s) for i, p in enumerate(prompts) for s in seeds]
    conditional = psi != 1 and centre == "conditional"
    for start in range(0, len(pairs), int(batch)):
        step = pairs[start:start + int(batch)]
        z = latents([s for _, _, s in step], model.G.z_dim)
        c = model.embed([p for _, p, _ in step])
        w_avg = torch.stack([model.centre(p) for _, p, _ in step]) if conditional else None
        images = synthesize(model, z, c, psi, trunc_cutoff, w_avg)
        images = to_uint8(images) if output == "uint8" else images
        yield [Sample(i, p, s, images[k]) for k, (i, p, s) in enumerate(step)]


def generate(model, prompts: Sequence[str], seeds: Sequence[int], psi: float = 1.0,
             trunc_cutoff: Optional[int] = None, centre: str = "conditional", batch: int = 8,
             device=None, output: str = "uint8", progress: bool = False) -> List[Sample]:
    """One Sample per (prompt, seed), prompt-major. psi < 1 truncates the first `trunc_cutoff` ws (all when None)
    toward the prompt's average w (centre="conditional") or the average over training (centre="global");
    StyleGAN2 only. device: move the model there first (None: where it is). output: "uint8" ([H, W, 3]
    numpy) or "float" ([3, H, W] torch, G's raw output)."""
    if device is not None:
        model.to(device)
    prompts, seeds = check_prompts(prompts), list(seeds)
    steps = iter_generate(model, prompts, seeds, psi, trunc_cutoff, centre, batch, output)
    samples: List[Sample] = []
    if progress:
        from tqdm import tqdm

        with tqdm(total=len(prompts) * len(seeds), unit="img", desc="generate") as bar:
            for step in steps:
                samples += step
                bar.update(len(step))
    else:
        for step in steps:
            samples += step
    return samples

