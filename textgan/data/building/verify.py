"""Re-checking a shard directory against its manifest: `shards/build.py verify OUT`.

For every shard the manifest lists: the tar exists, its sha256 and sample count match, and
every sample has a JPEG that decodes as RGB at resolution x resolution, a json that parses
(with the image id of its key), and feature arrays that load as float16. Shards indexed from another
tool (`shards index`) carry no sha256 (not checked) and their samples are checked by decoding them as
the loader does (image, json, caption from txt).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from textgan.data import format as fmt
from textgan.data.building.index import SOURCE_NAME as INDEXED_SOURCE
from textgan.data.decode import decode_jpeg
from textgan.data.sample_fields import sample_captions
from textgan.data.manifest import (find_part_manifests, load_manifest, load_manifest_file, manifest_path,
                                   shard_path)
from textgan.errors import UsageError
from textgan.files import sha256_file


@dataclass
class VerifyReport:
    manifests: list  # paths of the manifests checked
    shards: int = 0
    samples: int = 0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _manifests(out_dir: str) -> list:
    """(path, manifest) to check: manifest.json, or the part manifests of an unmerged split build."""
    if not os.path.isdir(out_dir):
        raise UsageError(f"{out_dir} is not a directory; pass the --outdir directory of a build.")
    if os.path.isfile(manifest_path(out_dir)) or not find_part_manifests(out_dir):
        return [(manifest_path(out_dir), load_manifest(out_dir))]
    return [(path, load_manifest_file(path)) for _, path in sorted(find_part_manifests(out_dir).items())]


def _check_indexed_sample(name: str, key: str, entries: dict, settings: dict) -> list:
    """A sample of shards indexed from another tool: its image decodes (and is cropped to the resolution as the
    loader does), its json parses, and it has a caption (txt, or json "caption")."""
    where = f"{name}: sample {key}"
    image_key = settings.get("image_key", fmt.KEY_JPG)
    if image_key not in entries or fmt.KEY_JSON not in entries:
        return [f"{where} lacks {image_key} or {fmt.KEY_JSON}"]
    problems = []
    try:
        decode_jpeg(entries[image_key], int(settings["resolution"]))
    except Exception as e:
        problems.append(f"{where}: {image_key} does not decode ({e})")
    try:
        captions = sample_captions(json.loads(entries[fmt.KEY_JSON].decode("utf-8")), entries)
        if not captions or not all(isinstance(c, str) and c for c in captions):
            problems.append(f"{where}: no caption (txt, or json \"caption\")")
    except (ValueError, AttributeError) as e:
        problems.append(f"{where}: json or txt does not parse ({e})")
    return problems


def _check_sample(name: str, key: str, entries: dict, resolution: int) -> list:
    problems = []
    where = f"{name}: sample {key}"
    if fmt.KEY_JPG not in entries or fmt.KEY_JSON not in entries:
        missing = [k for k in (fmt.KEY_JPG, fmt.KEY_JSON) if k not in entries]
        return [f"{where} lacks {', '.join(missing)}"]
    try:
        with Image.open(io.BytesIO(entries[fmt.KEY_JPG])) as img:
            img.load()
            if img.format != "JPEG" or img.mode != "RGB" or img.size != (resolution, resolution):
                problems.append(f"{where}: jpg is {img.format} {img.mode} {img.size[0]}x{img.size[1]}, "
                                f"expected an RGB JPEG {resolution}x{resolution}")
    except Exception as e:
        problems.append(f"{where}: jpg does not decode ({e})")
    try:
        meta = json.loads(entries[fmt.KEY_JSON].decode("utf-8"))
        if meta.get("image_id") != int(key) or not meta.get("captions"):
            problems.append(f"{where}: json has image_id {meta.get('image_id')!r} or no captions")
    except (ValueError, AttributeError) as e:
        problems.append(f"{where}: json does not parse ({e})")
    for feature in fmt.FEATURE_KEYS:
        if feature in entries:
            try:
                array = np.load(io.BytesIO(entries[feature]), allow_pickle=False)
                if array.dtype != np.float16:
                    problems.append(f"{where}: {feature} is {array.dtype}, expected float16")
            except Exception as e:
                problems.append(f"{where}: {feature} does not load ({e})")
    return problems


def _read_samples(path: str) -> list:
    """[(key, {extension: bytes})] in tar order; raises tarfile/OSError for a broken tar."""
    samples = []
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = os.path.basename(member.name).partition(".")
            if not samples or samples[-1][0] != key:
                samples.append((key, {}))
            samples[-1][1][ext] = tar.extractfile(member).read()
    return samples


def verify_shard(out_dir: str, shard: dict, resolution: int, indexed: dict | None = None) -> tuple:
    """(samples read, problems) of one manifest shard entry. indexed: the manifest's settings for shards indexed
    from another tool (not hashed, and their samples checked as the loader reads them), None for textgan-built ones."""
    name = shard["name"]
    path = shard_path(out_dir, shard)
    if not os.path.isfile(path):
        return 0, [f"{name}: shard file is missing"]
    problems = []
    if shard.get("sha256") is None and indexed is None:
        problems.append(f"{name}: the manifest has no sha256 for it (only indexed shards may lack one)")
    elif shard.get("sha256") is not None and sha256_file(path) != shard["sha256"]:
        problems.append(f"{name}: sha256 differs from the manifest (the file was modified or truncated)")
    try:
        samples = _read_samples(path)
    except (tarfile.TarError, OSError, EOFError) as e:
        return 0, problems + [f"{name}: not a readable tar ({e})"]
    if len(samples) != shard["samples"]:
        problems.append(f"{name}: holds {len(samples)} samples, the manifest says {shard['samples']}")
    for key, entries in samples:
        problems += (_check_sample(name, key, entries, resolution) if indexed is None
                     else _check_indexed_sample(name, key, entries, indexed))
    return len(samples), problems


def verify_shards(out_dir: str) -> VerifyReport:
    """Check every shard of out_dir against its manifest; UsageError when there is no manifest."""
    manifests = _manifests(out_dir)
    report = VerifyReport([path for path, _ in manifests])
    for path, manifest in manifests:
        resolution = int(manifest["settings"]["resolution"])
        indexed = manifest["settings"] if manifest.get("source") == INDEXED_SOURCE else None
        total = 0
        for shard in manifest["shards"]:
            count, problems = verify_shard(out_dir, shard, resolution, indexed)
            report.shards += 1
            report.samples += count
            report.problems += problems
            total += shard["samples"]
        if total != manifest["samples"]:
            report.problems.append(f"{os.path.basename(path)}: shards hold {total} samples in total "
                                   f"but \"samples\" says {manifest['samples']}")
    return report
