"""Sample grids: image cells hold the exact pixels, captions are written in a band under each image,
the PNG on disk is the returned array, and the grid's inputs are fixed by the seed."""

import numpy as np
import pytest
import torch
from PIL import Image

from textgan.train.grids import (
    BACKGROUND,
    MIN_CELL_WIDTH,
    _font,
    fixed_grid_inputs,
    render_grid,
    save_grid,
    to_uint8,
    wrap_caption,
)

CAPTIONS = ["a small red circle in the top left", "a large blue square", "a green triangle above a yellow star",
            "", "an extraordinarilylongwordthatcannotfitonalinebyitself and more words to wrap around the cell"]


def known_images(n, size, seed=0):
    """Float images in [-1, 1] built from known uint8 values (every value 0..255 occurs)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=[n, size, size, 3], dtype=np.uint8)
    pixels.reshape(-1)[:256] = np.arange(256)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return images, pixels


def test_to_uint8_inverts_the_float_conversion_exactly_and_clips():
    images, pixels = known_images(3, 8)
    assert np.array_equal(to_uint8(images), pixels)
    assert to_uint8(torch.full([1, 3, 1, 1], 1.7)).max() == 255
    assert to_uint8(torch.full([1, 3, 1, 1], -3.0)).min() == 0
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        to_uint8(torch.zeros([2, 1, 8, 8]))


@pytest.mark.parametrize("zoom", [1, None])
def test_cells_hold_the_exact_pixels_and_captions_sit_in_bands(tmp_path, zoom):
    images, pixels = known_images(5, 32)
    path = tmp_path / "fakes000004.png"
    grid = save_grid(images, CAPTIONS, str(path), ncol=3, zoom=zoom)
    again, layout = render_grid(images, CAPTIONS, ncol=3, zoom=zoom)

    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), grid)  # file == returned array
    assert np.array_equal(again, grid)  # deterministic
    assert grid.dtype == np.uint8 and grid.shape == layout.shape
    assert (layout.ncol, layout.nrow) == (3, 2)
    expected_zoom = 1 if zoom == 1 else MIN_CELL_WIDTH // 32
    assert layout.zoom == expected_zoom and layout.image_w == 32 * expected_zoom
    for i in range(5):
        top, left = layout.image_origin(i)
        cell = grid[top : top + layout.image_h, left : left + layout.image_w]
        enlarged = pixels[i].repeat(layout.zoom, axis=0).repeat(layout.zoom, axis=1)
        assert np.array_equal(cell, enlarged), f"cell {i} differs from its image"
        b_top, b_left, b_bottom, b_right = layout.band_box(i)
        band = grid[b_top:b_bottom, b_left:b_right]
        assert band.shape[0] > 0
        if CAPTIONS[i]:
            assert (band < 128).any(), f"caption {i} is not drawn"
        else:
            assert (band == BACKGROUND).all()
    # unused cell (row 2, col 3) and the padding stay background
    top, left = layout.image_origin(5)
    assert (grid[top:, left:] == BACKGROUND).all()


def test_grid_without_captions_has_no_bands():
    images, pixels = known_images(4, 16)
    grid, layout = render_grid(images, None, ncol=2, zoom=1)
    assert layout.band_h == 0
    top, left = layout.image_origin(3)
    assert np.array_equal(grid[top : top + 16, left : left + 16], pixels[3])


def test_caption_wrapping_fits_the_width_and_marks_cut_text():
    font = _font()
    lines = wrap_caption(CAPTIONS[4], font, width=60, max_lines=3)
    assert len(lines) == 3 and lines[-1].endswith("...")
    assert all(font.getlength(line) <= 60 for line in lines)
    assert wrap_caption("a red circle", font, width=500) == ["a red circle"]


def test_bad_grid_arguments_are_refused():
    images, _ = known_images(2, 16)
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        render_grid(images, ["one"], ncol=2)
    with pytest.raises(ValueError, match="ncol"):
        render_grid(images, None, ncol=0)


def test_fixed_grid_inputs_are_fixed_by_the_seed():
    pool = [f"caption {i}" for i in range(50)] + ["caption 0"]  # a duplicate is dropped
    z, captions = fixed_grid_inputs(pool, z_dim=8, n=12, seed=3)
    z2, captions2 = fixed_grid_inputs(pool, z_dim=8, n=12, seed=3)
    assert z.shape == (12, 8) and z.dtype == torch.float32
    assert torch.equal(z, z2) and captions == captions2
    assert len(set(captions)) == 12 and set(captions) <= set(pool)
    z3, captions3 = fixed_grid_inputs(pool, z_dim=8, n=12, seed=4)
    assert not torch.equal(z, z3) and captions != captions3
    # the latents do not depend on the caption pool (independent streams)
    z4, _ = fixed_grid_inputs(["other"] * 3, z_dim=8, n=12, seed=3)
    assert torch.equal(z, z4)


def test_few_captions_repeat_in_order():
    _, captions = fixed_grid_inputs(["a", "b", "c"], z_dim=4, n=7, seed=0)
    assert captions == ["a", "b", "c", "a", "b", "c", "a"]
    with pytest.raises(ValueError, match="at least one caption"):
        fixed_grid_inputs([], z_dim=4, n=2, seed=0)
