"""Reference shards for metrics: an index of what they hold, which images a metric uses, their captions.

ShardIndex: per readable sample, in tar order: shard number, image id, captions, sha256 of the stored
JPEG bytes. Built by one pass over the tars (no JPEG decoding) and cached under the manifest's hash
(the manifest lists every tar's sha256, so any change to the shards changes the key).

Selection (the COCO-2014 protocol: N captions, one per image, fixed seed): the images are ordered by
id (so re-sharding the same images selects the same ones), permuted with `seed`, and the first
min(N, images) taken. Image k gets the caption the evaluation loader gives it (drawn from the image
id: textgan.data.loading.samples.eval_caption_draws), so every metric, rank count and run pairs each
image with the same caption. N larger than the reference cycles through the images again with each
image's next caption.
"""

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from textgan.data.decode import decode_jpeg
from textgan.data.loading.samples import SkipCounter, choose_captions, eval_caption_draws, read_shard
from textgan.data.manifest import load_manifest, shard_path
from textgan.errors import UsageError
from textgan.metrics import cache

_SELECT_DOMAIN = 0x53454C  # "SEL": independent of every other stream drawn from the same seed
INDEX_VERSION = 1


def manifest_sha256(manifest: dict) -> str:
    return hashlib.sha256(cache.canonical(manifest).encode()).hexdigest()


@dataclass
class ShardIndex:
    shards_dir: str
    manifest: dict
    manifest_sha256: str
    shard: list  # per sample: index into manifest["shards"]
    ids: list
    captions: list
    jpg_sha256: list

    @property
    def resolution(self) -> int:
        return int(self.manifest["settings"]["resolution"])

    def describe(self) -> dict:
        """What a metric's protocol records about this reference."""
        settings = self.manifest.get("settings") or {}
        return {"shards": self.shards_dir, "manifest_sha256": self.manifest_sha256,
                "source": self.manifest.get("source"), "split": self.manifest.get("split"),
                "resolution": self.resolution, "crop": settings.get("crop"), "quality": settings.get("quality"),
                "images": len(self.ids), "skipped_in_manifest": len(self.manifest.get("skipped") or [])}


def _build_index(shards_dir: str, manifest: dict) -> dict:
    skips = SkipCounter()
    shard_of, ids, captions, hashes = [], [], [], []
    for number, entry in enumerate(manifest["shards"]):
        for raw in read_shard(shard_path(shards_dir, entry), int(entry["samples"]), skips):
            try:
                meta = json.loads(raw["json"])
                image_id, texts, jpg = int(meta["image_id"]), [str(c) for c in meta["captions"]], raw["jpg"]
            except Exception:  # unreadable sample: the loader would skip it too
                skips.skip(f"{entry['name']}:{raw.get('__key__')}", "bad sample")
                continue
            if not texts:
                continue
            shard_of.append(number)
            ids.append(image_id)
            captions.append(texts)
            hashes.append(hashlib.sha256(jpg).hexdigest())
    if not ids:
        raise UsageError(f"{shards_dir}: no readable sample in the shards; rebuild them")
    return {"shard": shard_of, "ids": ids, "captions": captions, "jpg_sha256": hashes, "skipped": skips.count}


def load_index(shards_dir: str, cache_dir: str) -> ShardIndex:
    """The (cached) index of a finished shard directory; UsageError when it is not one."""
    shards_dir = os.path.abspath(shards_dir)
    manifest = load_manifest(shards_dir)
    digest = manifest_sha256(manifest)
    fields = {"what": "shard-index", "index_version": INDEX_VERSION, "manifest_sha256": digest}
    data = cache.load_json(cache_dir, "index", fields)
    if data is None:
        data = _build_index(shards_dir, manifest)
        cache.save_json(cache_dir, "index", fields, data)
    return ShardIndex(shards_dir, manifest, digest, data["shard"], data["ids"], data["captions"], data["jpg_sha256"])


def select(index: ShardIndex, n: int, seed: int) -> list:
    """Positions (into the index) of the min(n, images) reference images a metric uses, in metric order."""
    by_id = np.argsort(np.asarray(index.ids, dtype=np.int64), kind="stable")
    order = np.random.default_rng([int(seed), _SELECT_DOMAIN]).permutation(len(by_id))
    return [int(by_id[k]) for k in order[: min(int(n), len(by_id))]]


def eval_caption_index(image_id: int, n_captions: int) -> int:
    """The caption the evaluation loader pairs with this image (keyed by the id alone)."""
    return choose_captions(n_captions, *eval_caption_draws(image_id))[0]


def captions_for(index: ShardIndex, positions: list, n: int) -> list:
    """n captions: the selected images' evaluation captions, then (beyond them) their next captions."""
    out = []
    for i in range(n):
        position = positions[i % len(positions)]
        texts = index.captions[position]
        first = eval_caption_index(index.ids[position], len(texts))
        out.append(texts[(first + i // len(positions)) % len(texts)])
    return out


def iter_selected_images(index: ShardIndex, positions: list, rank: int, world_size: int, batch_size: int):
    """This rank's share of the selected images as (selection numbers, uint8 [B, 3, R, R] numpy).

    Shard s belongs to rank s % world_size and its selected images are batched in tar order, so every
    image meets the same batch neighbours whatever the world size (bitwise-equal features on 1 and N
    ranks). Images whose JPEG does not decode are left out (the caller counts them)."""
    wanted = {}  # shard -> {image id: selection number}
    for number, position in enumerate(positions):
        wanted.setdefault(index.shard[position], {})[index.ids[position]] = number
    skips = SkipCounter()
    for shard in sorted(wanted):
        if shard % world_size != rank:
            continue
        entry = index.manifest["shards"][shard]
        numbers, pixels = [], []
        for raw in read_shard(shard_path(index.shards_dir, entry), int(entry["samples"]), skips):
            try:
                number = wanted[shard].get(int(json.loads(raw["json"])["image_id"]))
            except Exception:
                continue
            if number is None:
                continue
            try:
                image = decode_jpeg(raw["jpg"])
            except Exception:
                continue
            if image.shape != (index.resolution, index.resolution, 3):
                continue
            numbers.append(number)
            pixels.append(image.transpose(2, 0, 1))
            if len(numbers) == batch_size:
                yield numbers, np.stack(pixels)
                numbers, pixels = [], []
        if numbers:
            yield numbers, np.stack(pixels)
