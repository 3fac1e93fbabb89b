"""Sample grids: generated images with their captions written underneath, as PNG and for TensorBoard.

A grid's inputs (captions and z) are fixed for the whole run by `fixed_grid_inputs`, so the
snapshots fakes{tag}.png (tag: kimg.images, e.g. fakes000012.345.png) show the same prompts and latents
over time and can be compared.
Image cells hold the generator's pixels exactly (only converted to uint8, and enlarged by an
integer factor with nearest neighbour so that 32-px samples leave room for a readable caption).
"""

import io
import math
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from textgan.atomic import write_bytes_atomic

MIN_CELL_WIDTH = 128  # enough for ~20 characters per caption line at FONT_SIZE
FONT_SIZE = 10
MAX_CAPTION_LINES = 4
PAD = 2  # white pixels around every cell
TEXT_MARGIN = 2
BACKGROUND = 255
TEXT_COLOR = (0, 0, 0)


def to_uint8(images) -> np.ndarray:
    """Float images [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3] (rounded, clipped)."""
    x = torch.as_tensor(images).detach().to(device="cpu", dtype=torch.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images [N, 3, H, W] in [-1, 1], got shape {tuple(x.shape)}")
    x = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


@dataclass(frozen=True)
class GridLayout:
    """Where everything sits in a grid; cell i is at row i // ncol, column i % ncol."""

    num: int
    ncol: int
    image_h: int  # after zoom
    image_w: int
    zoom: int
    band_h: int  # caption band under each image (0: no captions)

    @property
    def nrow(self) -> int:
        return math.ceil(self.num / self.ncol)

    @property
    def shape(self) -> Tuple[int, int, int]:
        height = PAD + self.nrow * (self.image_h + self.band_h + PAD)
        width = PAD + self.ncol * (self.image_w + PAD)
        return height, width, 3

    def image_origin(self, index: int) -> Tuple[int, int]:
        """(top, left) pixel of image `index`."""
        row, col = divmod(index, self.ncol)
        return PAD + row * (self.image_h + self.band_h + PAD), PAD + col * (self.image_w + PAD)

    def band_box(self, index: int) -> Tuple[int, int, int, int]:
        """(top, left, bottom, right) of the caption band of image `index` (bottom/right exclusive)."""
        top, left = self.image_origin(index)
        return top + self.image_h, left, top + self.image_h + self.band_h, left + self.image_w


def _font():
    # Pillow >= 10.1 ships a scalable default font; older Pillow or no FreeType gives the bitmap one
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:
        return ImageFont.load_default()


def _line_height(font) -> int:
    return font.getbbox("Agjy|")[3] + 1


def _split_long_word(word: str, font, width: int) -> List[str]:
    pieces = []
    while len(word) > 1 and font.getlength(word) > width:
        cut = len(word) - 1
        while cut > 1 and font.getlength(word[:cut]) > width:
            cut -= 1
        pieces.append(word[:cut])
        word = word[cut:]
    return pieces + [word]


def wrap_caption(caption: str, font, width: int, max_lines: int = MAX_CAPTION_LINES) -> List[str]:
    """Greedy word wrap to `width` pixels (measured with the font: textwrap counts characters);
    words wider than a line are split; more than max_lines lines end in '...'."""
    lines: List[str] = []
    for word in caption.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.extend(_split_long_word(word, font, width))
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and font.getlength(last + "...") > width:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last + "..."]
    return lines


def render_grid(images, captions: Optional[Sequence[str]], ncol: int,
                zoom: Optional[int] = None) -> Tuple[np.ndarray, GridLayout]:
    """The grid as uint8 [H, W, 3] and its layout. zoom: integer enlargement of every image
    (None: the smallest that makes cells at least MIN_CELL_WIDTH wide); captions None: no bands."""
    pixels = to_uint8(images)
    num, height, width = pixels.shape[:3]
    if num == 0:
        raise ValueError("render_grid needs at least one image")
    if captions is not None and len(captions) != num:
        raise ValueError(f"{num} images but {len(captions)} captions")
    if ncol < 1:
        raise ValueError(f"ncol must be >= 1, got {ncol}")
    zoom = max(1, math.ceil(MIN_CELL_WIDTH / width)) if zoom is None else int(zoom)
    if zoom < 1:
        raise ValueError(f"zoom must be a positive integer, got {zoom}")
    image_h, image_w = height * zoom, width * zoom
    font = _font()
    line_h = _line_height(font)
    wrapped = [wrap_caption(c, font, image_w - 2 * TEXT_MARGIN) for c in captions] if captions is not None else None
    band_h = 0
    if wrapped is not None:
        band_h = max(1, max(len(lines) for lines in wrapped)) * line_h + 2 * TEXT_MARGIN
    layout = GridLayout(num=num, ncol=min(ncol, num), image_h=image_h, image_w=image_w,
                        zoom=zoom, band_h=band_h)

    canvas = Image.new("RGB", layout.shape[1::-1], (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    for i in range(num):
        top, left = layout.image_origin(i)
        cell = pixels[i].repeat(zoom, axis=0).repeat(zoom, axis=1)  # nearest neighbour: pixels stay exact
        canvas.paste(Image.fromarray(cell), (left, top))
        for k, line in enumerate(wrapped[i] if wrapped is not None else []):
            draw.text((left + TEXT_MARGIN, top + image_h + TEXT_MARGIN + k * line_h), line, fill=TEXT_COLOR, font=font)
    return np.asarray(canvas).copy(), layout


def save_grid(images, captions: Optional[Sequence[str]], path: str, ncol: int,
              zoom: Optional[int] = None) -> np.ndarray:
    """Write the grid to `path` as PNG (atomically: a viewer never sees half a file) and return it
    as uint8 [H, W, 3] for StatsWriter.add_image_grid."""
    grid, _ = render_grid(images, captions, ncol, zoom)
    save_png(path, grid)
    return grid


def save_png(path: str, pixels: np.ndarray) -> None:
    """uint8 [H, W, 3] as a PNG, atomically (a viewer never sees half a file)."""
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    write_bytes_atomic(path, png.getvalue(), tmp=f"{path}.tmp{os.getpid()}")


def fixed_grid_inputs(captions: Sequence[str], z_dim: int, n: int, seed: int) -> Tuple[torch.Tensor, List[str]]:
    """The run's grid inputs: n captions picked from `captions` and n latents z [n, z_dim] (float32).

    Deterministic in (captions, z_dim, n, seed), so a resumed run draws the same grid. Duplicate
    captions are dropped first; with fewer distinct captions than n they repeat in order (each then
    appears with several z, which shows diversity). Captions and z come from independent streams:
    a different caption pool does not change the latents."""
    pool = list(dict.fromkeys(str(c) for c in captions))
    if not pool:
        raise ValueError("fixed_grid_inputs needs at least one caption")
    if n < 1 or z_dim < 1:
        raise ValueError(f"n and z_dim must be >= 1, got n={n}, z_dim={z_dim}")
    if len(pool) >= n:
        picked = np.random.default_rng([seed, 0]).choice(len(pool), size=n, replace=False)
    else:
        picked = np.arange(n) % len(pool)
    z = np.random.default_rng([seed, 1]).standard_normal([n, z_dim])
    return torch.from_numpy(z.astype(np.float32)), [pool[i] for i in picked]


__all__ = ["GridLayout", "fixed_grid_inputs", "render_grid", "save_grid", "to_uint8", "wrap_caption"]