"""Frozen towers (textgan.encoders) with the tiny open_clip model and a seeded resnet18, offline."""

import hashlib
import shutil

import numpy as np
import open_clip
import pytest
import torch
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from tiny_models import register_tiny_clip, tiny_clip_weights, tiny_resnet_weights

from textgan.data.decode import to_float_image
from textgan.encoders import load_clip, load_perceptual
from textgan.files import sha256_file
from textgan.errors import UsageError


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def clip_file(weights_dir):
    return tiny_clip_weights(weights_dir)


@pytest.fixture(scope="module")
def resnet_file(weights_dir):
    return tiny_resnet_weights(weights_dir)


@pytest.fixture(scope="module")
def tower(clip_file):
    return load_clip(register_tiny_clip(), clip_file)


@pytest.fixture(scope="module")
def resnet(resnet_file):
    return load_perceptual("resnet18", resnet_file)


def _images(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1


# ---------------------------------------------------------------- CLIP


def test_sha256_file_matches_hashlib(clip_file):
    with open(clip_file, "rb") as f:
        assert sha256_file(clip_file, chunk_bytes=4096) == hashlib.sha256(f.read()).hexdigest()


def test_clip_identity_records_file_and_hash(tower, clip_file):
    assert tower.identity == {
        "model": "textgan-tiny-clip",
        "pretrained": clip_file,
        "weights_sha256": sha256_file(clip_file),
        "random_weights": False,
        "dim": 64,
    }
    assert (tower.model_name, tower.image_size, tower.dim) == ("textgan-tiny-clip", 64, 64)


def test_clip_weights_come_from_the_file(tower, clip_file):
    saved = torch.load(clip_file, weights_only=True)
    loaded = tower.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_clip_two_loads_give_identical_outputs(tower, clip_file):
    again = load_clip("textgan-tiny-clip", clip_file)
    images = _images(2, 32, 32)
    captions = ["a red circle", "two small blue squares"]
    with torch.no_grad():
        assert torch.equal(tower.encode_images(images), again.encode_images(images))
    assert torch.equal(tower.encode_texts(captions), again.encode_texts(captions))


def test_clip_shapes_and_raw_embeddings(tower):
    with torch.no_grad():
        square = tower.encode_images(_images(3, 32, 32))
        wide = tower.encode_images(_images(2, 40, 56))
    texts = tower.encode_texts(["a", "a green triangle above a circle", "x y z", "red"])
    assert square.shape == (3, 64) and wide.shape == (2, 64) and texts.shape == (4, 64)
    # Raw embeddings: the contrastive losses normalize themselves.
    assert not torch.allclose(square.norm(dim=1), torch.ones(3), atol=1e-3)
    assert len({tuple(r.tolist()) for r in texts}) == 4


def test_clip_normalizes_with_model_mean_std(tower):
    """At the model's own size no resize happens: the input is ((x+1)/2 - mean) / std."""
    images = _images(2, 64, 64)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = tower.model.encode_image(((images + 1) / 2 - mean) / std)
        assert torch.allclose(tower.encode_images(images), expected, atol=1e-6)


def test_clip_preprocessing_agrees_with_open_clip_pil_transform(tower):
    """Our torch resize (short side, antialiased bicubic) + center crop + normalization gives the
    pixels of open_clip's own PIL preprocess, up to PIL's uint8 rounding (1/255/std ~ 0.015)."""
    rng = np.random.default_rng(0)
    # Smooth-ish content (upsampled noise), non-square so that the crop matters.
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    pixels = np.array(Image.fromarray(small).resize((160, 120), Image.BILINEAR))
    pil_transform = open_clip.image_transform(64, is_train=False, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
    reference = pil_transform(Image.fromarray(pixels))[None]
    ours = tower.preprocess(to_float_image(pixels)[None])
    assert ours.shape == reference.shape == (1, 3, 64, 64)
    difference = (ours - reference).abs()
    # Measured: mean 0.0042, max 0.014; without antialiasing the mean is 0.010, bilinear 0.012.
    assert difference.mean() < 0.006 and difference.max() < 0.03


def test_clip_is_frozen_but_passes_gradients_to_images(tower):
    assert all(not p.requires_grad for p in tower.parameters())
    tower.train()  # a parent module switching to training must not unfreeze the tower
    assert not tower.training and not tower.model.training
    images = _images(2, 32, 32).requires_grad_()
    tower.encode_images(images).pow(2).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert images.grad.abs().sum() > 0
    assert all(p.grad is None for p in tower.parameters())


def test_clip_missing_weights_file(tmp_path):
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(UsageError, match="nope.safetensors"):
        load_clip(register_tiny_clip(), missing)


def test_clip_unknown_model_suggests_close_name(clip_file):
    with pytest.raises(UsageError) as info:
        load_clip("textgan-tiny-clp", clip_file)
    assert "textgan-tiny-clp" in str(info.value) and "Did you mean: textgan-tiny-clip" in str(info.value)


def test_clip_without_weights_is_refused():
    with pytest.raises(UsageError, match="no weights given"):
        load_clip(register_tiny_clip(), None)


def test_clip_random_weights_warn_and_say_so():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        tower = load_clip(register_tiny_clip(), None, allow_random=True)
    assert tower.identity["random_weights"] is True
    assert tower.identity["pretrained"] is None and tower.identity["weights_sha256"] is None
    assert tower.encode_texts(["a cat"]).shape == (1, 64)


def test_clip_unknown_tag_lists_tags():
    with pytest.raises(UsageError, match="tags: openai, yfcc15m, cc12m.*or pass the path of a local weights file"):
        load_clip("RN50", "not_a_tag")


def test_clip_tag_unavailable_offline_says_how_to_give_a_file():
    # conftest sets HF_HUB_OFFLINE=1, so this fails at once instead of retrying for ~47 s.
    with pytest.raises(UsageError) as info:
        load_clip("RN50", "openai")
    message = str(info.value)
    assert "'openai'" in message and "local weights file" in message and "HF_HUB_OFFLINE" in message


def test_clip_weights_of_another_architecture_are_refused(resnet_file):
    with pytest.raises(UsageError, match="could not load CLIP weights file .*tiny_resnet18.pt"):
        load_clip(register_tiny_clip(), resnet_file)


# ---------------------------------------------------------------- perceptual


def test_perceptual_identity_and_weights(resnet, resnet_file):
    assert resnet.identity == {
        "arch": "resnet18",
        "weights": resnet_file,
        "weights_sha256": sha256_file(resnet_file),
        "random_weights": False,
        "dim": 512,
        "input_size": 224,
    }
    saved = torch.load(resnet_file, weights_only=True)
    trunk = resnet.trunk.state_dict()
    # The trunk is resnet18 without avgpool/fc: its conv1 is child 0, layer4 is child 7.
    assert torch.equal(trunk["0.weight"], saved["conv1.weight"])
    assert torch.equal(trunk["7.1.bn2.running_var"], saved["layer4.1.bn2.running_var"])


def test_perceptual_shapes_and_determinism(resnet, resnet_file):
    again = load_perceptual("resnet18", resnet_file)
    square, wide = _images(3, 32, 32), _images(2, 40, 56)
    with torch.no_grad():
        a, b = resnet.encode_images(square), again.encode_images(square)
        assert a.shape == (3, 512) and resnet.encode_images(wide).shape == (2, 512)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


def test_perceptual_resizes_short_side_to_224_and_normalizes_imagenet(resnet):
    seen = []
    handle = resnet.trunk.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    try:
        with torch.no_grad():
            resnet.encode_images(_images(1, 32, 48))
            images = _images(2, 224, 224)
            features = resnet.encode_images(images)
    finally:
        handle.remove()
    assert seen[0] == (1, 3, 224, 336)  # aspect kept, nothing cropped
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = resnet.trunk(((images + 1) / 2 - mean) / std).mean(dim=(2, 3))
    assert torch.allclose(features, expected, atol=1e-5)


def test_perceptual_input_size_option(resnet, resnet_file):
    """input_size sets the short side the trunk sees (aspect kept) and is part of the identity; the same
    weights at another size give other features, so the size must be checked wherever features are reused."""
    small = load_perceptual("resnet18", resnet_file, input_size=112)
    assert small.identity == dict(resnet.identity, input_size=112)
    seen = []
    handle = small.trunk.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    try:
        with torch.no_grad():
            images = _images(2, 48, 64)
            at_112, at_224 = small.encode_images(images), resnet.encode_images(images)
    finally:
        handle.remove()
    assert seen == [(2, 3, 112, 149)]  # 64 * 112 / 48 = 149.3
    assert at_112.shape == at_224.shape == (2, 512)
    assert (at_112 - at_224).abs().max() > 1e-3


def test_perceptual_input_size_below_the_trunks_reduction_is_refused(resnet_file):
    for bad in (31, 0, 112.0, True):
        with pytest.raises(UsageError, match=r"perceptual input size must be a whole number of pixels >= 32"):
            load_perceptual("resnet18", resnet_file, input_size=bad)
    assert load_perceptual("resnet18", resnet_file, input_size=32).encode_images(_images(1, 32, 32)).shape == (1, 512)


def test_perceptual_frozen_in_eval_mode_with_gradients_to_images(resnet):
    resnet.train()
    assert not any(m.training for m in resnet.modules())  # BatchNorm statistics must not move
    before = resnet.trunk.state_dict()["1.running_mean"].clone()
    images = _images(2, 32, 32).requires_grad_()
    resnet.encode_images(images).sum().backward()
    assert torch.equal(resnet.trunk.state_dict()["1.running_mean"], before)
    assert images.grad.abs().sum() > 0 and all(p.grad is None for p in resnet.parameters())


def test_perceptual_other_architectures_dims():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        resnet50 = load_perceptual("resnet50", None, allow_random=True)
    with pytest.warns(UserWarning, match="RANDOM weights"):
        vgg16 = load_perceptual("vgg16", None, allow_random=True)
    with torch.no_grad():
        assert resnet50.encode_images(_images(1, 32, 32)).shape == (1, 2048)
        assert vgg16.encode_images(_images(1, 32, 32)).shape == (1, 512)
    assert vgg16.identity["random_weights"] is True and vgg16.identity["weights"] is None


def test_perceptual_errors(tmp_path, clip_file, resnet_file):
    with pytest.raises(UsageError, match="Did you mean: resnet18"):
        load_perceptual("resnet19", resnet_file)
    with pytest.raises(UsageError, match="missing.pth"):
        load_perceptual("resnet18", str(tmp_path / "missing.pth"))
    with pytest.raises(UsageError, match="no weights given"):
        load_perceptual("resnet18", None)
    with pytest.raises(UsageError, match="as a torchvision resnet18 state dict"):
        load_perceptual("resnet18", clip_file)
    renamed = shutil.copy(resnet_file, tmp_path / "copy.pt")
    with pytest.raises(UsageError, match="as a torchvision resnet50 state dict"):
        load_perceptual("resnet50", str(renamed))
