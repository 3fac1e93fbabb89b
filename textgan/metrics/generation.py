"""Generating metric samples on several ranks: a fixed plan, fixed latents, results gathered in order.

Samples 0..N-1 are cut into global batches of `batch_size`; batch b runs on rank b % world_size.
Each sample therefore has the same latent, caption and batch neighbours whatever the world size,
and the gathered results (ordered by batch number) are identical on 1 and on N ranks.
Every rank must call `gather_batches` (it is collective) even when its share is empty.
"""

import torch

_LATENT_DOMAIN = 0x4C4154  # "LAT": metric latents differ from the training's and the grid's


def batch_plan(n: int, batch_size: int, rank: int, world_size: int) -> list:
    """[(batch number, start, end)] of this rank."""
    starts = range(0, n, batch_size)
    return [(b, s, min(s + batch_size, n)) for b, s in enumerate(starts) if b % world_size == rank]


def latents(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """[n, z_dim] fixed latents: sample i's latent depends on (seed, i) only."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + _LATENT_DOMAIN)
    return torch.randn([n, z_dim], generator=generator)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8, as they would be saved to a PNG."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def from_uint8(images) -> torch.Tensor:
    return torch.as_tensor(images).float().div(127.5).sub(1.0)


@torch.no_grad()
def generate_uint8(G, encode_text, captions: list, z: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, R, R] on the CPU: G(z, c(captions)) with constant noise, quantized like a saved image."""
    c = encode_text(list(captions))
    return to_uint8(G(z.to(c.device), c, noise_mode="const"))


def gather_batches(gather, local: list) -> list:
    """`local`: [(batch number, payload)] of this rank -> every rank's payloads, ordered by batch number.
    `gather`: Runtime.all_gather_object (or any function with its contract)."""
    merged = [item for part in gather(local) for item in part]
    merged.sort(key=lambda item: item[0])
    return [payload for _, payload in merged]


def map_generated(G, encode_text, captions: list, z: torch.Tensor, batch_size: int, runtime, fn) -> list:
    """fn(uint8 images, captions) for every global batch, computed on its rank and gathered in order
    (collective). Returns the payloads of all batches, in batch order, on every rank."""
    local = []
    for b, start, end in batch_plan(len(captions), batch_size, runtime.rank, runtime.world_size):
        images = generate_uint8(G, encode_text, captions[start:end], z[start:end])
        local.append((b, fn(images, captions[start:end])))
    return gather_batches(runtime.all_gather_object, local)
