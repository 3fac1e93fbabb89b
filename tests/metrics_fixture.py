"""Test helpers for textgan.metrics: a tiny registered feature extractor, shards of given images, and a
"generator" that draws known images, so metric values can be predicted.

    register_tiny_extractor()            -> TINY_EXTRACTOR, a seeded 2-conv net torch-fidelity knows by name
    write_image_shards(dir, images, ids) -> the decoded stored images (what a metric reads back)
    LookupGenerator(bank_ids, bank)      -> G(z, c) = bank[c] + shift + noise * pattern(z)
    encode_ids                           -> the text condition of captions "picture {id}": the id itself
"""

import io
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from shard_fixture import write_shard_dir
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from textgan.data import format as fmt
from textgan.data.decode import decode_jpeg

TINY_EXTRACTOR = "textgan-tiny-extractor"
FEATURE_DIM = 24


class TinyExtractor(FeatureExtractorBase):
    """uint8 [B, 3, H, W] -> ("feat" [B, 24], "logits" [B, 10]); seeded, or weights from a file."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        with torch.random.fork_rng():
            torch.manual_seed(7)
            self.conv1 = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
            self.conv2 = torch.nn.Conv2d(16, FEATURE_DIM, 3, stride=2, padding=1)
            self.fc = torch.nn.Linear(FEATURE_DIM, 10)
        if feature_extractor_weights_path is not None:
            self.load_state_dict(torch.load(feature_extractor_weights_path, weights_only=True))

    @staticmethod
    def get_provided_features_list():
        return ("feat", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"fid": "feat", "kid": "feat", "isc": "logits", "prc": "feat"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros([1, 3, 16, 16], dtype=torch.uint8)

    def forward(self, x):
        x = F.interpolate(x.float() / 127.5 - 1, size=(32, 32), mode="bilinear", align_corners=False)
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        feat = x.mean(dim=(2, 3)) + 0.5 * x.amax(dim=(2, 3))
        out = {"feat": feat, "logits": self.fc(feat)}
        return tuple(out[name] for name in self.features_list)


def register_tiny_extractor() -> str:
    if TINY_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(TINY_EXTRACTOR, TinyExtractor)
    return TINY_EXTRACTOR


def tiny_extractor_weights(path, seed: int) -> str:
    """A weights file for TinyExtractor with other (seeded) values."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = TinyExtractor(TINY_EXTRACTOR, ["feat"])
        for p in net.parameters():
            p.data.normal_(0, 0.3)
    torch.save(net.state_dict(), path)
    return str(path)


def textured_images(n: int, resolution: int, seed: int) -> np.ndarray:
    """uint8 [n, R, R, 3]: smooth random textures (low-frequency noise, upsampled), all different."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand([n, 3, 4, 4], generator=g)
    fine = F.interpolate(coarse, size=(resolution, resolution), mode="bicubic", align_corners=False)
    fine = fine + 0.15 * torch.rand([n, 3, resolution, resolution], generator=g)
    return (fine.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def caption_of(image_id: int, j: int = 0) -> str:
    return f"picture {image_id} variant {j}"


def jpeg_bytes(pixels) -> bytes:
    """The JPEG the fixture stores for uint8 [R, R, 3] pixels (deterministic: same pixels, same bytes)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_image_shards(out_dir, images, ids, split="val", source="shapes", samples_per_shard=16,
                       jpegs=None) -> np.ndarray:
    """Shards (format of textgan/data/format.py) holding `images` (uint8 [N, R, R, 3]) under `ids`, with
    two captions each; `jpegs`: {position: bytes} stored instead of encoding that image (to plant an
    exact duplicate). Returns the stored images as decoded (uint8 [N, R, R, 3])."""
    resolution = int(images.shape[1])
    jpegs = jpegs or {}
    decoded = []

    def sample(k: int) -> dict:
        image_id = int(ids[k])
        data = jpegs.get(k) or jpeg_bytes(images[k])
        decoded.append(decode_jpeg(data))
        meta = {"image_id": image_id, "file_name": f"{image_id:012d}.jpg",
                "captions": [caption_of(image_id, 0), caption_of(image_id, 1)],
                "width": resolution, "height": resolution, "split": split, "attributes": {}}
        return {"__key__": fmt.sample_key(image_id), fmt.KEY_JPG: data, fmt.KEY_JSON: json.dumps(meta).encode()}

    shard_samples = [(sample(k) for k in range(start, min(start + samples_per_shard, len(ids))))
                     for start in range(0, len(ids), samples_per_shard)]
    write_shard_dir(out_dir, shard_samples, split=split, resolution=resolution, samples_per_shard=samples_per_shard,
                    source=source, builder_version="metrics-fixture")
    return np.stack(decoded)


def encode_ids(captions) -> torch.Tensor:
    """[N, 1] float: the image id named by each caption ("picture {id} variant {j}")."""
    return torch.tensor([[float(c.split()[1])] for c in captions])


class LookupGenerator(torch.nn.Module):
    """G(z, c) = bank image of id c, plus a brightness `shift`, plus `noise` x a z-dependent pattern,
    in [-1, 1]. With shift = noise = 0 it reproduces the reference images exactly."""

    def __init__(self, ids, images_uint8, shift=0.0, noise=0.0, z_dim=8):
        super().__init__()
        self.row = {int(i): k for k, i in enumerate(ids)}
        bank = torch.as_tensor(images_uint8).permute(0, 3, 1, 2).float() / 127.5 - 1
        self.register_buffer("bank", bank)
        self.shift, self.noise, self.z_dim = float(shift), float(noise), z_dim
        self.img_resolution = int(bank.shape[-1])
        g = torch.Generator().manual_seed(3)
        self.register_buffer("patterns", torch.randn([z_dim, 3, self.img_resolution, self.img_resolution], generator=g))

    def forward(self, z, c, noise_mode="const"):
        rows = [self.row[int(round(float(v)))] for v in c[:, 0]]
        images = self.bank[rows] + self.shift
        if self.noise:
            images = images + self.noise * torch.einsum("nk,kchw->nchw", z, self.patterns) / self.z_dim ** 0.5
        return images.clamp(-1, 1)


VAL_IDS = np.arange(1_000_000, 1_000_096)  # like captioned-shapes val ids: offset from train's
TRAIN_IDS = np.arange(0, 64)


def write_sets(root, resolution=16, val_seed=0, train_seed=1):
    """root/val (96 images) and root/train (64 images) of different textures.
    Returns (val dir, val stored images, train dir, train stored images)."""
    val_dir, train_dir = os.path.join(str(root), "val"), os.path.join(str(root), "train")
    val = write_image_shards(val_dir, textured_images(len(VAL_IDS), resolution, val_seed), VAL_IDS, split="val")
    train = write_image_shards(train_dir, textured_images(len(TRAIN_IDS), resolution, train_seed), TRAIN_IDS,
                               split="train")
    return val_dir, val, train_dir, train


def metrics_config(root, val_dir, train_dir, metrics, **changes):
    from textgan.metrics import MetricsConfig

    settings = dict(metrics=list(metrics), reference=val_dir, train_shards=train_dir,
                    cache_dir=os.path.join(str(root), "cache"), feature_extractor=register_tiny_extractor(),
                    batch_size=16)
    return MetricsConfig(**{**settings, **changes})


def single_runtime():
    from textgan.runtime import Runtime

    return Runtime.from_env(device="cpu", env={}, argv=[])
