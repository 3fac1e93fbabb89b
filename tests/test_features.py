"""Precomputed features (textgan.data.features): float16 per-sample arrays that equal the
on-the-fly features of the stored JPEG, and the identity check training relies on."""

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tiny_models import register_tiny_clip, tiny_clip_weights, tiny_resnet_weights

from textgan.data import format as fmt
from textgan.data.decode import decode_jpeg, to_float_image
from textgan.data.features import FeatureExtractor, check_features_identity
from textgan.encoders import load_clip, load_perceptual
from textgan.errors import UsageError

CAPTIONS = [
    ["a red circle"],
    ["a blue square on the left", "one square, blue"],
    ["two green triangles", "triangles", "a picture of green shapes below a line"],
    ["a yellow star"],
]


def _jpeg(size, seed) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = rng.integers(0, min(size) // 2, 2)
        box = [int(x0), int(y0), int(x0) + size[0] // 3, int(y0) + size[1] // 3]
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    directory = tmp_path_factory.mktemp("weights")
    return {"clip": tiny_clip_weights(directory), "resnet": tiny_resnet_weights(directory)}


@pytest.fixture(scope="module")
def clip(weights):
    return load_clip(register_tiny_clip(), weights["clip"])


@pytest.fixture(scope="module")
def resnet(weights):
    return load_perceptual("resnet18", weights["resnet"])


@pytest.fixture(scope="module")
def jpegs():
    return [_jpeg((48, 48), seed) for seed in range(len(CAPTIONS))]


def _on_the_fly(tower, jpeg: bytes) -> np.ndarray:
    """What training computes from a sample it reads: one image through the same tower."""
    with torch.no_grad():
        return tower.encode_images(to_float_image(decode_jpeg(jpeg))[None])[0].numpy()


def test_compute_gives_float16_arrays_of_the_right_shapes(clip, resnet, jpegs):
    results = FeatureExtractor(clip, resnet, batch_size=3).compute(jpegs, CAPTIONS)
    assert len(results) == len(jpegs)
    for result, captions in zip(results, CAPTIONS):
        assert set(result) == {fmt.KEY_CLIP_IMG, fmt.KEY_CLIP_TXT, fmt.KEY_PERCEPTUAL}
        assert all(array.dtype == np.float16 for array in result.values())
        assert result[fmt.KEY_CLIP_IMG].shape == (64,)
        assert result[fmt.KEY_CLIP_TXT].shape == (len(captions), 64)
        assert result[fmt.KEY_PERCEPTUAL].shape == (512,)


def test_precomputed_equals_on_the_fly(clip, resnet, jpegs):
    """The property training relies on: features from the shards == features computed from the
    stored JPEG during training, within float16 rounding."""
    results = FeatureExtractor(clip, resnet, batch_size=3).compute(jpegs, CAPTIONS)
    for result, jpeg, captions in zip(results, jpegs, CAPTIONS):
        np.testing.assert_allclose(result[fmt.KEY_CLIP_IMG], _on_the_fly(clip, jpeg), rtol=1e-2, atol=1e-3)
        np.testing.assert_allclose(result[fmt.KEY_PERCEPTUAL], _on_the_fly(resnet, jpeg), rtol=1e-2, atol=1e-3)
        for row, caption in zip(result[fmt.KEY_CLIP_TXT], captions):
            np.testing.assert_allclose(row, clip.encode_texts([caption])[0].numpy(), rtol=1e-2, atol=1e-3)
    # Different images and captions give different features (the rows are not all one vector).
    assert not np.allclose(results[0][fmt.KEY_CLIP_IMG], results[1][fmt.KEY_CLIP_IMG], atol=1e-2)
    assert not np.allclose(results[2][fmt.KEY_CLIP_TXT][0], results[2][fmt.KEY_CLIP_TXT][1], atol=1e-2)


def test_batch_size_does_not_change_features(clip, jpegs):
    one = FeatureExtractor(clip, None, batch_size=1).compute(jpegs, CAPTIONS)
    all_ = FeatureExtractor(clip, None, batch_size=64).compute(jpegs, CAPTIONS)
    for a, b in zip(one, all_):
        for key in (fmt.KEY_CLIP_IMG, fmt.KEY_CLIP_TXT):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-2, atol=1e-3)


def test_images_of_different_sizes_in_one_batch(resnet):
    jpegs = [_jpeg((48, 48), 10), _jpeg((40, 56), 11), _jpeg((48, 48), 12)]
    results = FeatureExtractor(None, resnet).compute(jpegs, [["a"], ["b"], ["c"]])
    for result, jpeg in zip(results, jpegs):
        assert set(result) == {fmt.KEY_PERCEPTUAL}  # only the enabled feature
        np.testing.assert_allclose(result[fmt.KEY_PERCEPTUAL], _on_the_fly(resnet, jpeg), rtol=1e-2, atol=1e-3)


def test_disabled_extractor_computes_nothing(jpegs):
    extractor = FeatureExtractor(None, None)
    assert not extractor.enabled
    assert extractor.identity() == {"clip": None, "perceptual": None}
    assert extractor.compute(jpegs, CAPTIONS) == [{} for _ in jpegs]


def test_mismatched_inputs_are_refused(clip, jpegs):
    with pytest.raises(ValueError, match="4 images but 3 caption lists"):
        FeatureExtractor(clip).compute(jpegs, CAPTIONS[:3])


def test_identity_goes_into_the_manifest_as_json(clip, resnet):
    extractor = FeatureExtractor(clip, resnet)
    assert extractor.enabled
    identity = extractor.identity()
    assert identity == {"clip": clip.identity, "perceptual": resnet.identity}
    assert json.loads(json.dumps(identity)) == identity


# ---------------------------------------------------------------- check_features_identity


def _clip_identity(model="ViT-B-32", pretrained="openai", sha=None, random_weights=False, dim=512):
    return {
        "model": model, "pretrained": pretrained, "weights_sha256": sha, "random_weights": random_weights, "dim": dim
    }


def test_same_identity_passes(clip, resnet):
    identity = FeatureExtractor(clip, resnet).identity()
    assert check_features_identity(json.loads(json.dumps(identity)), identity) is None


def test_same_weights_file_elsewhere_passes(clip, weights, tmp_path):
    """The builder and the training run may keep the same weights under different paths."""
    moved = load_clip(register_tiny_clip(), shutil.copy(weights["clip"], tmp_path / "moved.pt"))
    assert moved.identity["pretrained"] != clip.identity["pretrained"]
    check_features_identity({"clip": clip.identity, "perceptual": None}, {"clip": moved.identity, "perceptual": None})


def test_different_model_is_refused_naming_both():
    made = {"clip": _clip_identity("ViT-B-32"), "perceptual": None}
    wanted = {"clip": _clip_identity("ViT-B-16"), "perceptual": None}
    with pytest.raises(UsageError) as info:
        check_features_identity(made, wanted)
    message = str(info.value)
    assert "made with clip model 'ViT-B-32'" in message and "this run uses clip model 'ViT-B-16'" in message


def test_different_weights_are_refused_naming_both():
    made = {"clip": _clip_identity(pretrained="/a/w.pt", sha="aaaa" * 16), "perceptual": None}
    wanted = {"clip": _clip_identity(pretrained="/a/w.pt", sha="bbbb" * 16), "perceptual": None}
    with pytest.raises(UsageError, match=r"sha256 aaaaaaaaaaaa.*sha256 bbbbbbbbbbbb"):
        check_features_identity(made, wanted)
    tag = {"clip": _clip_identity(pretrained="laion2b_s34b_b79k"), "perceptual": None}
    with pytest.raises(UsageError, match=r"tag 'openai'.*tag 'laion2b_s34b_b79k'"):
        check_features_identity({"clip": _clip_identity(pretrained="openai"), "perceptual": None}, tag)
    # A tag and a file cannot be shown to hold the same weights.
    with pytest.raises(UsageError, match="weights file /a/w.pt"):
        check_features_identity(made, {"clip": _clip_identity(pretrained="openai"), "perceptual": None})


def test_perceptual_mismatch_and_missing_features_are_refused(resnet):
    other = dict(resnet.identity, weights_sha256="c" * 64)
    with pytest.raises(UsageError, match="precomputed perceptual features .*resnet18"):
        check_features_identity({"clip": None, "perceptual": other}, {"clip": None, "perceptual": resnet.identity})
    with pytest.raises(UsageError, match="no precomputed perceptual features"):
        check_features_identity(None, {"clip": None, "perceptual": resnet.identity})


def test_perceptual_features_of_another_input_size_are_refused(resnet):
    """The same net and weights at another input size are other features; shards made before the size was an
    option (no input_size recorded) were made at 224 px."""
    small = dict(resnet.identity, input_size=112)
    with pytest.raises(UsageError, match=r"made with perceptual model 'resnet18' at 224 px .*this run uses "
                                         r"perceptual model 'resnet18' at 112 px"):
        check_features_identity({"clip": None, "perceptual": resnet.identity}, {"clip": None, "perceptual": small})
    check_features_identity({"clip": None, "perceptual": small}, {"clip": None, "perceptual": dict(small)})
    older = {k: v for k, v in resnet.identity.items() if k != "input_size"}
    check_features_identity({"clip": None, "perceptual": older}, {"clip": None, "perceptual": resnet.identity})
    with pytest.raises(UsageError, match="at 224 px"):
        check_features_identity({"clip": None, "perceptual": older}, {"clip": None, "perceptual": small})


def test_random_weights_never_match():
    random_clip = _clip_identity(pretrained=None, random_weights=True)
    with pytest.raises(UsageError, match="random weights"):
        check_features_identity({"clip": random_clip}, {"clip": random_clip, "perceptual": None})


def test_features_the_run_does_not_use_are_not_checked(resnet):
    made = {"clip": _clip_identity("ViT-B-32"), "perceptual": resnet.identity}
    check_features_identity(made, {"clip": None, "perceptual": resnet.identity})
    check_features_identity(None, {"clip": None, "perceptual": None})
