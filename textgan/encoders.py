"""Frozen feature towers: an open_clip model (image + text) and a ResNet/VGG "perceptual" net.

The shard builder uses them to precompute features; training uses the very same objects to
compute features on the fly and for contrastive losses. Hence one rule: images enter as float
tensors [B, 3, H, W] in [-1, 1] (what textgan.data.decode.to_float_image and the generator give),
and all resizing/normalization happens here, in torch, so that

* features of a stored JPEG are the same whether computed by the builder or during training, and
* gradients flow from the features back into the images (a generator), while the towers'
  own parameters stay frozen.

Every tower carries an `identity` dict (model name, weights tag or file + sha256) which the
builder writes to the manifest and training compares (textgan.data.features.check_features_identity).

Pure torch + open_clip + torchvision; nothing distributed.
"""

import difflib
import logging
import os

import open_clip
import torch
import torch.nn.functional as F
import torchvision
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD

# Architectures that ship with textgan (textgan/model_configs/*.json), registered with open_clip
# so they are chosen by name like any other: `textgan-demo-clip` is a small text tower for the
# CPU demo (4 layers x 128, 32 tokens), ~10x cheaper per caption than open_clip's smallest.
BUILTIN_MODEL_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_configs")
open_clip.add_model_config(BUILTIN_MODEL_CONFIGS)
from torch import nn

from textgan.errors import UsageError
from textgan.files import sha256_file
from textgan.warn_once import drop_always, warn_once


WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
# Pooled feature size of each perceptual architecture (see PerceptualNet).
PERCEPTUAL_DIMS = {"resnet18": 512, "resnet50": 2048, "vgg16": 512}
# ResNet/VGG were trained on 224-px ImageNet crops; their features are most meaningful at that scale.
PERCEPTUAL_SHORT_SIDE = 224
# The smallest input side: both families reduce by 32 before pooling, so below 32 px the last block
# would pool an empty (VGG) or sub-pixel map.
PERCEPTUAL_MIN_SIDE = 32


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(WEIGHT_FILE_SUFFIXES)


def _existing_weights_file(path: str, what: str) -> str:
    """Absolute path of a weights file that must exist; UsageError naming it otherwise."""
    if not os.path.isfile(path):
        raise UsageError(
            f"{what} weights file {path!r} does not exist (or is not a file). "
            "Give the path of a local weights file that exists on this machine."
        )
    return os.path.abspath(path)


def _warn_random(what: str) -> None:
    # Loud on purpose: features from random weights are meaningless outside tests and demos.
    message = (
        f"{what} has RANDOM weights (allow_random=True, no pretrained weights given): its embeddings "
        "carry no meaning. Use this only for tests and demos."
    )
    warn_once(message, stacklevel=3)  # once per run: the demo builds its random tower in several places


def _resize_short_side(images: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Scale so that the shorter side is `size` (aspect kept), antialiased like PIL's resize."""
    h, w = images.shape[-2:]
    if min(h, w) == size:
        return images
    scale = size / min(h, w)
    new_hw = (max(size, round(h * scale)), max(size, round(w * scale)))
    return F.interpolate(images, size=new_hw, mode=mode, antialias=True, align_corners=False)


def _center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


def _check_images(images: torch.Tensor) -> None:
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"expected float images [B, 3, H, W] in [-1, 1], got {shape}")


class _FrozenTower(nn.Module):
    """Base of the towers: parameters never train and the model never leaves eval mode,
    even when a parent module calls .train() (BatchNorm statistics must not drift)."""

    def _freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class ClipTower(_FrozenTower):
    """A frozen open_clip model. Embeddings are raw (not L2-normalized).

    Image preprocessing mirrors open_clip's own (resize the short side to `image_size` with the
    model's interpolation, center crop, normalize with the model's mean/std) but runs in torch,
    so it is differentiable and identical for stored JPEGs and generated images.
    """

    def __init__(self, model: nn.Module, tokenizer, model_name: str, identity: dict):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.identity = identity
        self.dim = int(identity["dim"])
        cfg = model.visual.preprocess_cfg
        size = cfg["size"]
        height, width = (size, size) if isinstance(size, int) else size
        if height != width:
            raise UsageError(f"CLIP model {model_name!r} expects non-square {height}x{width} input; not supported.")
        self.image_size = int(height)
        # open_clip's preprocess uses bicubic (most models) or bilinear; anything else -> bicubic.
        interpolation = cfg.get("interpolation")
        self.interpolation = interpolation if interpolation in ("bilinear", "bicubic") else "bicubic"
        self.register_buffer("mean", torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._freeze()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any size -> the model's normalized [B, 3, image_size, image_size] input."""
        _check_images(images)
        x = images.to(device=self.mean.device, dtype=torch.float32)
        x = _resize_short_side(x, self.image_size, self.interpolation)
        x = _center_crop(x, self.image_size)
        return ((x + 1.0) * 0.5 - self.mean) / self.std

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, dim]; differentiable w.r.t. `images`."""
        return self.model.encode_image(self.preprocess(images))

    def encode_texts(self, captions: list) -> torch.Tensor:
        """list of N strings -> [N, dim]. No gradient: nothing upstream of text can learn."""
        if isinstance(captions, str):
            raise ValueError("encode_texts takes a list of captions, not a single string")
        with torch.no_grad():
            tokens = self.tokenizer(list(captions)).to(self.mean.device)
            return self.model.encode_text(tokens)


def _clip_model_name(model_name: str) -> str:
    """The registered open_clip name, or UsageError suggesting close ones."""
    name = model_name.strip().replace("/", "-")  # open_clip accepts 'ViT-B/32' for 'ViT-B-32'
    known = open_clip.list_models()
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UsageError(
        f"unknown open_clip model {model_name!r}.{hint} "
        "(open_clip.list_models() lists all names; 'hf-hub:'/'local-dir:' names are not supported here, "
        "pass a built-in name plus a local weights file instead.)"
    )


def load_clip(model_name: str, pretrained: str | None, *, allow_random: bool = False, device="cpu") -> ClipTower:
    """A frozen ClipTower for an open_clip model name and weights.

    pretrained: an open_clip tag ('openai', 'laion2b_s34b_b79k', ...; the weights must already be
    in the Hugging Face cache when offline) or a local weights file (.pt/.pth/.bin/.safetensors).
    None is refused unless allow_random (tests, demos), which warns loudly.
    """
    name = _clip_model_name(model_name)
    pretrained = os.fspath(pretrained) if isinstance(pretrained, os.PathLike) else pretrained
    weights_sha256 = None
    if pretrained is None:
        if not allow_random:
            raise UsageError(
                f"no weights given for CLIP model {name!r}: pass a pretrained tag "
                f"(available: {', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none'}) "
                "or the path of a local weights file."
            )
        _warn_random(f"CLIP model {name!r}")
    elif _looks_like_path(pretrained):
        pretrained = _existing_weights_file(pretrained, f"CLIP model {name!r}")
        weights_sha256 = sha256_file(pretrained)
    else:
        tags = open_clip.list_pretrained_tags_by_model(name)
        pretrained = pretrained.lower().replace("-", "_")  # open_clip's own tag normalization
        if pretrained not in tags:
            raise UsageError(
                f"{pretrained!r} is not a pretrained tag of open_clip model {name!r} "
                f"(tags: {', '.join(tags) or 'none'}); or pass the path of a local weights file."
            )

    try:
        # open_clip logs its own "No pretrained weights loaded" on the root logger: ours said it already.
        # (drop_always also keeps open_clip's logging.info/warning calls from configuring the root logger.)
        with drop_always(logging.getLogger(), "No pretrained weights loaded for model"):
            model = open_clip.create_model(
                name, pretrained=pretrained, require_pretrained=pretrained is not None, device=device
            )
    except Exception as e:  # open_clip raises RuntimeError/OSError/pickle errors alike
        if weights_sha256 is not None:
            raise UsageError(
                f"could not load CLIP weights file {pretrained} into model {name!r}: {e}. "
                "Is it an open_clip/OpenAI state dict for this architecture? (OpenAI weights need the "
                "'-quickgelu' model names.)"
            ) from e
        raise UsageError(
            f"could not get weights for CLIP model {name!r} with tag {pretrained!r}: {e}. Without internet, "
            "download the weights on a machine that has it (or copy its Hugging Face cache and set "
            "HF_HUB_OFFLINE=1), or pass the path of a local weights file instead of the tag."
        ) from e
    try:
        with drop_always(logging.getLogger(), "No pretrained weights loaded for model"):  # see above
            tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:
        raise UsageError(f"could not build the tokenizer of CLIP model {name!r} (offline?): {e}") from e

    identity = {
        "model": name,
        "pretrained": pretrained,
        "weights_sha256": weights_sha256,
        "random_weights": pretrained is None,
        "dim": int(open_clip.get_model_config(name)["embed_dim"]),
    }
    return ClipTower(model, tokenizer, name, identity).to(device)


class PerceptualNet(_FrozenTower):
    """Frozen ImageNet CNN -> one global-average-pooled feature vector per image.

    Images are resized (short side to `input_size`, 224 by default, aspect kept, antialiased bilinear
    like torchvision's ImageNet transforms), not cropped: global average pooling accepts any shape, so nothing is
    thrown away. Features are the last convolutional block, averaged over space:
    resnet18/resnet50: the 512/2048 vector fed to `fc`; vgg16: the 512 channels of `features`
    (not the 4096 fc7 vector: pooled conv features keep VGG and ResNet alike, resolution-agnostic
    and 8x smaller to store). A smaller input_size trades feature fidelity for cost: the conv trunk's
    work scales with the pixel count (112 px: about a quarter of 224 px), which on a GPU step is the
    tower's whole cost; the input size is part of `identity`, so features made at one size never
    stand in for another's.
    """

    def __init__(self, arch: str, trunk: nn.Module, identity: dict):
        super().__init__()
        self.arch = arch
        self.trunk = trunk
        self.identity = identity
        self.dim = int(identity["dim"])
        self.input_size = int(identity["input_size"])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._freeze()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        x = images.to(device=self.mean.device, dtype=torch.float32)
        x = _resize_short_side(x, self.input_size, "bilinear")
        return ((x + 1.0) * 0.5 - self.mean) / self.std

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, dim]; differentiable w.r.t. `images`."""
        return self.trunk(self.preprocess(images)).mean(dim=(2, 3))


def check_perceptual_size(input_size) -> None:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < PERCEPTUAL_MIN_SIDE:
        raise UsageError(
            f"perceptual input size must be a whole number of pixels >= {PERCEPTUAL_MIN_SIDE} (the ResNet/VGG "
            f"trunks reduce by 32 before pooling), got {input_size!r}; {PERCEPTUAL_SHORT_SIDE} is ImageNet's scale."
        )


def _perceptual_trunk(arch: str, model: nn.Module) -> nn.Module:
    if arch.startswith("resnet"):
        return nn.Sequential(*list(model.children())[:-2])  # drop avgpool and fc
    return model.features


def load_perceptual(arch: str, weights: str | None, *, allow_random: bool = False, device="cpu",
                    input_size: int = PERCEPTUAL_SHORT_SIDE) -> PerceptualNet:
    """A frozen PerceptualNet; weights: a local torchvision state-dict file (e.g. a copy of
    torchvision's resnet18-f37072fd.pth). None is refused unless allow_random, which warns loudly.
    input_size: the short side images are resized to before the net (224: ImageNet's scale)."""
    check_perceptual_size(input_size)
    if arch not in PERCEPTUAL_DIMS:
        close = difflib.get_close_matches(arch, list(PERCEPTUAL_DIMS), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown perceptual architecture {arch!r}.{hint} Choose one of {', '.join(PERCEPTUAL_DIMS)}.")
    weights = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    weights_sha256 = None
    model = torchvision.models.get_model(arch, weights=None)
    if weights is None:
        if not allow_random:
            raise UsageError(
                f"no weights given for perceptual net {arch!r}: pass the path of a local torchvision "
                f"state-dict file (torchvision caches downloads under $TORCH_HOME/hub/checkpoints)."
            )
        _warn_random(f"perceptual net {arch!r}")
    else:
        weights = _existing_weights_file(weights, f"perceptual net {arch!r}")
        weights_sha256 = sha256_file(weights)
        try:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
        except Exception as e:
            raise UsageError(
                f"could not load {weights} as a torchvision {arch} state dict: {e}. "
                f"Give the state-dict file of a torchvision {arch}."
            ) from e
    identity = {
        "arch": arch,
        "weights": weights,
        "weights_sha256": weights_sha256,
        "random_weights": weights is None,
        "dim": PERCEPTUAL_DIMS[arch],
        "input_size": int(input_size),
    }
    return PerceptualNet(arch, _perceptual_trunk(arch, model), identity).to(device)
