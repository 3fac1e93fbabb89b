"""The shapes_alignment evaluator: near-perfect on real shapes pictures, near chance on random ones,
each criterion able to fail on its own, and captions parsed strictly."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from textgan.metrics.alignment import parse_caption, score_image, shapes_alignment
from textgan.data.decode import to_float_image
from textgan.data.sources.shapes import make_scene, render_scene

N_EVAL = 300


def jpeg_round_trip(img: Image.Image, subsampling: int) -> np.ndarray:
    """subsampling 0 = 4:4:4 (what the shard builder writes), -1 = PIL's default 4:2:0 (the harder case)."""
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=95, subsampling=subsampling)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"))


@pytest.fixture(scope="module")
def scenes():
    # val split and a seed of its own: nothing here was looked at while tuning the evaluator
    return [make_scene(i, seed=11, split="val") for i in range(N_EVAL)]


@pytest.fixture(scope="module")
def captions(scenes):
    return [s["captions"][i % 5] for i, s in enumerate(scenes)]  # every template, in turn


@pytest.fixture(scope="module")
def images32(scenes):
    return np.stack([jpeg_round_trip(render_scene(s, 32), subsampling=0) for s in scenes])


@pytest.mark.parametrize("size,subsampling,min_shape", [(32, 0, 0.95), (32, -1, 0.9), (64, -1, 0.95)])
def test_real_pictures_score_near_perfectly_after_jpeg(scenes, captions, images32, size, subsampling, min_shape):
    if (size, subsampling) == (32, 0):
        images = images32
    else:
        images = np.stack([jpeg_round_trip(render_scene(s, size), subsampling) for s in scenes])
    result = shapes_alignment(images, captions)
    assert result["n"] == N_EVAL
    assert result["color"] >= 0.95
    assert result["position"] >= 0.95
    assert result["relation"] >= 0.95
    assert result["shape"] >= min_shape
    assert result["overall"] == pytest.approx(np.mean([result[k] for k in ("color", "position", "relation", "shape")]))


def test_exact_renders_at_high_resolution_score_perfectly(scenes, captions):
    images = np.stack([np.asarray(render_scene(s, 256)) for s in scenes[:40]])
    result = shapes_alignment(images, captions[:40])
    assert result["color"] == result["position"] == result["relation"] == result["shape"] == 1.0


def test_uniform_noise_scores_near_chance(captions):
    noise = np.random.default_rng(0).integers(0, 256, size=(N_EVAL, 32, 32, 3), dtype=np.uint8)
    result = shapes_alignment(noise, captions)
    assert result["color"] < 0.3  # chance: ~1/8 for one object, ~1/28 for two
    assert result["overall"] < 0.35


def test_pictures_with_other_pictures_captions_score_near_chance(images32, captions):
    mismatched = captions[1:] + captions[:1]  # every picture gets a neighbour's caption
    result = shapes_alignment(images32, mismatched)
    assert result["color"] < 0.3
    assert result["overall"] < 0.3


def test_generator_output_tensor_in_minus_one_to_one_gives_the_same_scores(images32, captions):
    as_uint8 = shapes_alignment(images32[:60], captions[:60])
    as_tensor = shapes_alignment(to_float_image(torch.from_numpy(images32[:60])), captions[:60])
    assert as_tensor == as_uint8


def test_each_criterion_fails_on_its_own():
    scene = {"objects": [{"shape": "circle", "color": "red", "size": "large", "position": "top left",
                          "cx": 0.2, "cy": 0.2, "r": 0.16}],
             "relation": None, "background": [120, 120, 120]}
    pixels = np.asarray(render_scene(scene, 32))
    assert score_image(pixels, "a large red circle in the top left") == {
        "color": True, "position": True, "relation": None, "shape": True}
    assert score_image(pixels, "a large red circle in the bottom right") == {
        "color": True, "position": False, "relation": None, "shape": True}
    assert score_image(pixels, "a large red square in the top left")["shape"] is False
    assert score_image(pixels, "a large blue circle in the top left")["color"] is False

    pair = {"objects": [{"shape": "triangle", "color": "yellow", "size": "small", "position": None,
                         "cx": 0.25, "cy": 0.5, "r": 0.1},
                        {"shape": "diamond", "color": "blue", "size": "large", "position": None,
                         "cx": 0.7, "cy": 0.55, "r": 0.16}],
            "relation": "to the left of", "background": [200, 195, 190]}
    pixels = np.asarray(render_scene(pair, 32))
    assert score_image(pixels, "a small yellow triangle to the left of a large blue diamond") == {
        "color": True, "position": None, "relation": True, "shape": True}
    assert score_image(pixels, "a large blue diamond to the right of a small yellow triangle")["relation"] is True
    assert score_image(pixels, "a small yellow triangle above a large blue diamond")["relation"] is False
    assert score_image(pixels, "a small yellow triangle to the right of a large blue diamond")["relation"] is False
    assert score_image(pixels, "a small yellow triangle to the left of a large red diamond")["color"] is False
    assert score_image(pixels, "a small yellow circle to the left of a large blue diamond")["shape"] is False


def test_a_blank_picture_matches_no_caption():
    grey = np.full((32, 32, 3), 128, np.uint8)
    assert score_image(grey, "a small red circle in the center") == {
        "color": False, "position": False, "relation": None, "shape": False}


def test_parse_caption_reads_natural_variants_and_rejects_other_text():
    assert parse_caption("A small red circle at the top left corner.") == {
        "objects": [{"shape": "circle", "color": "red", "size": "small", "position": "top left"}],
        "relation": None}
    parsed = parse_caption("a large blue square beneath  a small orange triangle")
    assert parsed["relation"] == "below" and [o["color"] for o in parsed["objects"]] == ["blue", "orange"]
    with pytest.raises(ValueError, match="'a man riding a horse on a beach' is not a captioned-shapes caption"):
        parse_caption("a man riding a horse on a beach")
    with pytest.raises(ValueError, match="not a captioned-shapes caption"):
        parse_caption("a small teal circle in the center")  # not a palette colour


def test_bad_inputs_are_refused_with_a_clear_message(images32, captions):
    with pytest.raises(ValueError, match="2 images but 3 captions"):
        shapes_alignment(images32[:2], captions[:3])
    with pytest.raises(ValueError, match="uint8 numpy"):
        shapes_alignment(images32[:2].astype(np.float32), captions[:2])
    with pytest.raises(ValueError, match="at least 16 px"):
        score_image(images32[0][:8, :8], captions[0])


def test_the_summary_splits_one_and_two_object_captions(scenes, captions, images32):
    # Real pictures for the one-object captions, blank grey ones for the two-object captions: the split
    # must show one kind perfect-ish and the other at zero, and the headline must be their weighted mix.
    two = [parse_caption(c)["relation"] is not None for c in captions]
    grey = np.full_like(images32[0], 128)
    images = np.stack([grey if is_two else image for image, is_two in zip(images32, two)])
    result = shapes_alignment(images, captions)
    n_two = sum(two)
    assert 0 < n_two < N_EVAL
    assert result["one_object"]["n"] == N_EVAL - n_two and result["two_objects"]["n"] == n_two
    assert result["one_object"]["color"] >= 0.95 and result["one_object"]["position"] >= 0.95
    assert result["two_objects"] == {"color": 0.0, "relation": 0.0, "shape": 0.0, "n": n_two}
    assert result["color"] == pytest.approx(result["one_object"]["color"] * (N_EVAL - n_two) / N_EVAL)
    assert result["position"] == result["one_object"]["position"] and result["relation"] == 0.0
