"""Tiny real models for tests: an open_clip config small enough to build in ~0.05 s, and seeded
weights files so that tests load "pretrained" weights from disk exactly like a real run would.

Import from tests:  from tiny_models import register_tiny_clip, tiny_clip_weights, tiny_resnet_weights
"""

import json
import os
import tempfile

import open_clip
import torch
import torchvision

TINY_CLIP_NAME = "textgan-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
_SEED = 1234


def register_tiny_clip() -> str:
    """Register the tiny open_clip model (once per process) and return its name."""
    if TINY_CLIP_NAME not in open_clip.list_models():
        config_dir = tempfile.mkdtemp(prefix="textgan-tiny-clip-")
        # open_clip names a model after its config file's stem.
        path = os.path.join(config_dir, f"{TINY_CLIP_NAME}.json")
        with open(path, "w") as f:
            json.dump(TINY_CLIP_CONFIG, f)
        open_clip.add_model_config(path)
    return TINY_CLIP_NAME


def tiny_clip_weights(directory) -> str:
    """Seeded tiny CLIP state dict saved as directory/tiny_clip.pt; returns the path."""
    name = register_tiny_clip()
    with torch.random.fork_rng():  # seed locally, leave the caller's RNG alone
        torch.manual_seed(_SEED)
        model = open_clip.create_model(name, pretrained=None)
    path = os.path.join(str(directory), "tiny_clip.pt")
    torch.save(model.state_dict(), path)
    return path


def tiny_resnet_weights(directory) -> str:
    """Seeded torchvision resnet18 state dict saved as directory/tiny_resnet18.pt; returns the path."""
    with torch.random.fork_rng():
        torch.manual_seed(_SEED)
        model = torchvision.models.resnet18(weights=None)
    path = os.path.join(str(directory), "tiny_resnet18.pt")
    torch.save(model.state_dict(), path)
    return path
