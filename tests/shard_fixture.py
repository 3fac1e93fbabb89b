"""Tiny shard directories in the exact format of textgan/data/format.py, for tests.

Every value is a function of the image id, so a test can check what a loader returns:
- the JPEG is a solid colour `pixel_colour(image_id)` (JPEG keeps a flat colour within ~2 levels);
- caption j is `caption_text(image_id, j)`;
- features (when asked for) are constant vectors: clip_img = image_id, clip_txt row j = image_id*10 + j,
  perceptual = -image_id (exact in float16 for ids < 200).

Damage, to test the loader's skipping:
- `corrupt`: these ids get garbage bytes instead of a JPEG (the rest of the sample is intact);
- `truncate_shard`: that tar is cut in the middle of the JPEG of its sample number
  `samples_in_shard // 2`, so exactly `truncated_survivors(...)` ids of it stay readable.
The manifest keeps the counts and sha256 of the undamaged build, as the builder would have written them.
"""

import io
import json
import os
import tarfile

import numpy as np
import webdataset as wds
from PIL import Image

from textgan.data import format as fmt
from textgan.files import sha256_file

CLIP_DIM = 8
PERCEPTUAL_DIM = 4


def pixel_colour(image_id: int) -> tuple:
    """RGB colour of an image: distinct for neighbouring ids, away from 0/255 so JPEG cannot clip it."""
    return (20 + (image_id * 37) % 216, 20 + (image_id * 91 + 50) % 216, 20 + (image_id * 17 + 100) % 216)


def caption_text(image_id: int, j: int) -> str:
    return f"image {image_id} caption {j}"


def shard_ids(n_samples: int, samples_per_shard: int) -> list:
    """Image ids of each shard, in tar order."""
    return [list(range(s, min(s + samples_per_shard, n_samples))) for s in range(0, n_samples, samples_per_shard)]


def truncated_survivors(ids_in_shard: list) -> list:
    """The ids of a truncated shard that are still complete in its tar."""
    return ids_in_shard[: len(ids_in_shard) // 2]


def _jpeg(colour, resolution: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (resolution, resolution), colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _sample(image_id, resolution, captions_per_image, features, corrupt):
    captions = [caption_text(image_id, j) for j in range(captions_per_image)]
    sample = {
        "__key__": fmt.sample_key(image_id),
        fmt.KEY_JPG: b"this is not a jpeg" * 4 if image_id in corrupt else _jpeg(pixel_colour(image_id), resolution),
        fmt.KEY_JSON: json.dumps(
            {
                "image_id": image_id,
                "file_name": f"shape_{image_id:06d}.png",
                "captions": captions,
                "width": resolution,
                "height": resolution,
                "split": "train",
                "attributes": {"id": image_id},
            }
        ).encode(),
    }
    if features:
        sample[fmt.KEY_CLIP_IMG] = np.full([CLIP_DIM], image_id, np.float16)
        sample[fmt.KEY_CLIP_TXT] = np.stack(
            [np.full([CLIP_DIM], image_id * 10 + j, np.float16) for j in range(captions_per_image)]
        )
        sample[fmt.KEY_PERCEPTUAL] = np.full([PERCEPTUAL_DIM], -image_id, np.float16)
    return sample


def _truncate_mid_jpeg(path: str, image_id: int) -> None:
    with tarfile.open(path) as tar:
        member = tar.getmember(f"{fmt.sample_key(image_id)}.{fmt.KEY_JPG}")
        cut = member.offset_data + member.size // 2
    with open(path, "r+b") as f:
        f.truncate(cut)


def write_shard_dir(out_dir, shard_samples, *, split: str, resolution: int, samples_per_shard: int,
                    source: str = "shapes", features=None, builder_version: str = "test-fixture") -> dict:
    """The one hand-written shard writer of the tests: each entry of `shard_samples` (an iterable of
    WebDataset sample dicts) becomes one tar, named as the builder names them, and manifest.json is
    written in the builder's shape with each tar's count and sha256. `features`: the manifest's
    settings.features (default: none stored). Returns the manifest."""
    out_dir = str(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    shards = []
    for index, samples in enumerate(shard_samples):
        name = fmt.shard_name(split, index)
        path = os.path.join(out_dir, name)
        count = 0
        with wds.TarWriter(path) as sink:
            for sample in samples:
                sink.write(sample)
                count += 1
        shards.append({"name": name, "samples": count, "sha256": sha256_file(path)})
    manifest = {
        "format": fmt.FORMAT_NAME,
        "format_version": fmt.FORMAT_VERSION,
        "builder_version": builder_version,
        "source": source,
        "split": split,
        "settings": {
            "resolution": resolution,
            "crop": "center",
            "quality": 95,
            "seed": 0,
            "limit": None,
            "samples_per_shard": samples_per_shard,
            "exclude_overlap": False,
            "features": features or {"clip": None, "perceptual": None},
        },
        "annotations_sha256": None,
        "shards": shards,
        "samples": sum(shard["samples"] for shard in shards),
        "skipped": [],
        "captions_dropped": 0,
        "captions_dropped_by_reason": {},
        "overlap": {"checked_against": None, "ids": 0, "bytes": 0, "excluded": 0},
    }
    with open(os.path.join(out_dir, fmt.MANIFEST_NAME), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def write_shards(
    out_dir,
    n_samples: int,
    samples_per_shard: int,
    resolution: int = 16,
    captions_per_image: int = 3,
    features: bool = False,
    corrupt=(),
    truncate_shard=None,
    split: str = "train",
) -> dict:
    """Write tars with ids 0..n_samples-1 (in order, `samples_per_shard` per tar) and manifest.json;
    return the manifest."""
    corrupt = set(corrupt)
    ids_by_shard = shard_ids(n_samples, samples_per_shard)
    if truncate_shard is not None and not 0 <= truncate_shard < len(ids_by_shard):
        raise ValueError(f"truncate_shard={truncate_shard} but only {len(ids_by_shard)} shards were written")
    # Shaped like the towers' identities in textgan.encoders (the loader only needs "not null").
    feature_settings = {
        "clip": {"model": "test-constant", "pretrained": None, "weights_sha256": None, "random_weights": True,
                 "dim": CLIP_DIM} if features else None,
        "perceptual": {"arch": "test-constant", "weights": None, "weights_sha256": None, "random_weights": True,
                       "dim": PERCEPTUAL_DIM} if features else None,
    }
    shard_samples = [(_sample(image_id, resolution, captions_per_image, features, corrupt) for image_id in ids)
                     for ids in ids_by_shard]
    manifest = write_shard_dir(out_dir, shard_samples, split=split, resolution=resolution,
                               samples_per_shard=samples_per_shard, features=feature_settings)
    if truncate_shard is not None:  # after the manifest: it keeps the undamaged counts and sha256
        ids = ids_by_shard[truncate_shard]
        _truncate_mid_jpeg(os.path.join(str(out_dir), manifest["shards"][truncate_shard]["name"]), ids[len(ids) // 2])
    return manifest
