"""Worker side of the streaming loader: read one shard's samples, decode them into a batch.

Skips are counted as "samples the manifest promises minus samples served": a sample whose JPEG,
JSON or features do not decode counts 1, and a shard that is truncated (or missing) counts the
samples it no longer holds. So the count is exact however a tar is damaged, and the same in the
training and the evaluation streams.
"""

import io
import json
import logging
from typing import Optional

import numpy as np
import torch

from textgan.data import format as fmt
from textgan.data.decode import decode_jpeg_into
from textgan.data.sample_fields import sample_captions, sample_image_id
from textgan.data.loading.pixel_slots import SlotPool
from textgan.data.loading.tar_members import TarFormatError, group_samples, iter_tar_files

log = logging.getLogger("textgan.data.loading.loader")

# Distinct constants keep the random streams drawn for different purposes independent.
EVAL_CAPTION_DOMAIN = 0x45564C  # "EVL"
_MAX_DISTINCT_WARNINGS = 100


class SampleError(ValueError):
    """A sample that cannot be served (bad JPEG, JSON or features)."""


class SkipCounter:
    """Counts skipped samples in one worker; warns once per distinct problem, because a training
    stream revisits a bad sample every time it draws its shard and would otherwise flood the log."""

    def __init__(self):
        self.count = 0
        self._warned = set()

    def skip(self, where: str, reason: str, n: int = 1) -> None:
        self.count += n
        if where not in self._warned and len(self._warned) < _MAX_DISTINCT_WARNINGS:
            self._warned.add(where)
            if n:
                log.warning("textgan loader: skipping %d sample(s) of %s: %s", n, where, reason)
            else:  # damage past the samples the manifest lists (an indexed tar whose cut the index counted)
                log.warning("textgan loader: %s: %s; no sample the manifest lists is lost", where, reason)


def read_shard(path: str, expected: int, skips: SkipCounter) -> list:
    """The raw samples ({"__key__", "jpg": bytes, ...}) of one tar, in tar order.

    A damaged tar (cut short, corrupt from some header on) still gives every sample before the damage;
    samples lost to it are counted here; a partial sample at the cut is returned and fails to decode
    later (counted then). Read with tar_members (its docstring says why not tarfile/webdataset)."""
    files, error = [], None
    try:
        with open(path, "rb") as f:
            for item in iter_tar_files(f):
                files.append(item)
    except (OSError, TarFormatError) as exn:  # missing or unreadable file, or damage part way
        error = exn
    raw = group_samples(files)
    missing = max(expected - len(raw), 0)
    if error is not None or missing:
        reason = f"damaged tar ({error!r})" if error is not None else "fewer samples than the manifest lists"
        skips.skip(path, f"{reason}; {len(raw)} of {expected} samples readable", n=missing)
    return raw


def choose_captions(n_captions: int, u_main: float, u_alt: float) -> tuple:
    """(index, alt_index) of two captions from two uniform draws in [0, 1): alt differs from index
    whenever the image has more than one caption (heterologous pairs for the contrastive losses)."""
    index = min(int(u_main * n_captions), n_captions - 1)
    if n_captions == 1:
        return index, index
    step = 1 + min(int(u_alt * (n_captions - 1)), n_captions - 2)
    return index, (index + step) % n_captions


def eval_caption_draws(image_id: int) -> tuple:
    """Caption draws for evaluation: keyed by the image alone, so every evaluation (any number of
    ranks and workers) pairs each image with the same captions and metrics stay comparable."""
    u = np.random.default_rng([EVAL_CAPTION_DOMAIN, int(image_id)]).random(2)
    return float(u[0]), float(u[1])


def _load_npy(raw: dict, key: str) -> np.ndarray:
    if key not in raw:
        raise SampleError(f"missing {key} although the manifest says the shards carry it")
    try:
        return np.load(io.BytesIO(raw[key]), allow_pickle=False)
    except Exception as exn:
        raise SampleError(f"bad {key}: {exn!r}") from exn


class SampleDecoder:
    """Raw sample -> its pixels written into a batch row, and a dict of its other fields; or SampleError.

    Everything that must stack into a batch is checked here (image size, feature shapes), so a
    single odd sample is skipped instead of crashing the worker when the batch is built.
    image_key: the file of the image (jpg; indexed shards may hold png/webp). resize: None (textgan
    shards: an image of another size is damage) or "center" (indexed shards: center-crop and resize)."""

    def __init__(self, resolution: int, clip: bool, perceptual: bool, image_key: str = fmt.KEY_JPG,
                 resize: Optional[str] = None):
        self.resolution = int(resolution)
        self.clip = clip
        self.perceptual = perceptual
        self.image_key = image_key
        self.resize = resize
        self._shapes = {}  # feature key -> shape of the first good sample in this worker

    def _feature(self, raw: dict, key: str) -> np.ndarray:
        array = _load_npy(raw, key)
        per_caption = key == fmt.KEY_CLIP_TXT  # [n_captions, D]; the others are vectors
        if array.ndim != (2 if per_caption else 1):
            raise SampleError(f"{key} has shape {array.shape}")
        shape = array.shape[1:] if per_caption else array.shape
        expected = self._shapes.setdefault(key, shape)
        if shape != expected:
            raise SampleError(f"{key} has shape {array.shape}, earlier samples {expected}")
        return array.astype(np.float32)

    def decode(self, raw: dict, out: np.ndarray, draws=None) -> dict:
        """`out`: the uint8 [R, R, 3] batch row for the pixels (written only for a sample that decodes; a failed
        sample may leave it half written, for the next sample to overwrite). `draws`: two uniforms for the
        caption choice; None -> eval_caption_draws(image_id)."""
        for key in (self.image_key, fmt.KEY_JSON):
            if key not in raw:
                raise SampleError(f"missing {key}")
        try:
            meta = json.loads(raw[fmt.KEY_JSON])
            image_id = sample_image_id(meta, raw["__key__"])
            captions = sample_captions(meta, raw)
        except Exception as exn:
            raise SampleError(f"bad json or txt: {exn!r}") from exn
        if not captions or not all(isinstance(c, str) and c for c in captions):
            raise SampleError("no captions (or a caption that is not a non-empty string)")
        try:
            width, height = decode_jpeg_into(raw[self.image_key], out, self.resolution if self.resize else None)
        except Exception as exn:
            raise SampleError(f"bad {self.image_key}: {exn!r}") from exn
        if (width, height) != (self.resolution, self.resolution):
            raise SampleError(f"image is {width}x{height}, the manifest says {self.resolution}")

        u_main, u_alt = eval_caption_draws(image_id) if draws is None else draws
        index, alt = choose_captions(len(captions), u_main, u_alt)
        sample = {
            "caption": captions[index],
            "caption_alt": captions[alt],
            "caption_index": index,
            "caption_alt_index": alt,
            "image_id": image_id,
            "key": raw["__key__"],
        }
        if self.clip:
            clip_txt = self._feature(raw, fmt.KEY_CLIP_TXT)
            if clip_txt.shape[0] != len(captions):
                raise SampleError(f"{fmt.KEY_CLIP_TXT} has {clip_txt.shape[0]} rows for {len(captions)} captions")
            sample["clip_img"] = self._feature(raw, fmt.KEY_CLIP_IMG)
            sample["clip_txt"] = clip_txt[index]
            sample["clip_txt_alt"] = clip_txt[alt]
        if self.perceptual:
            sample["perceptual"] = self._feature(raw, fmt.KEY_PERCEPTUAL)
        return sample


FEATURE_BATCH_KEYS = ("clip_img", "clip_txt", "clip_txt_alt", "perceptual")


# Per-sample integers and features travel from the workers as numpy arrays, pickled inline with the batch, and become
# tensors in the main process (arrays_as_tensors): a tensor sent from a DataLoader worker goes through its own
# shared-memory segment and file descriptor, which cost more than the array itself (measured: three such tensors
# per batch took 1 worker from ~0.8 to ~0.7 of the in-process loader's samples/s at 64 px). The pixels, the one
# large array, go through shared memory reused from batch to batch (textgan/data/loading/pixel_slots.py).
SMALL_ARRAY_KEYS = ("caption_index", "caption_alt_index", "image_id")


def arrays_as_tensors(batch: dict) -> dict:
    """The numpy arrays of a received batch (SMALL_ARRAY_KEYS, and FEATURE_BATCH_KEYS present) as tensors."""
    for key in SMALL_ARRAY_KEYS + FEATURE_BATCH_KEYS:
        if key in batch:
            batch[key] = torch.from_numpy(batch[key])
    return batch


def collate(samples: list, pixels) -> dict:
    """Decoded samples -> the batch dict the training loop sees (see textgan.data.loading.loader), but for
    `pixels` (what SlotPool.send gives for the rows the samples were decoded into) and the numpy arrays
    that arrays_as_tensors converts in the main process."""
    batch = {
        # uint8 as decoded: a quarter of the bytes float32 would send from the worker processes, and the
        # conversion (to_float_image) runs where the batch is used, on the training device
        "pixels": pixels,
        "caption": [s["caption"] for s in samples],
        "caption_alt": [s["caption_alt"] for s in samples],
        "caption_index": np.array([s["caption_index"] for s in samples], dtype=np.int64),
        "caption_alt_index": np.array([s["caption_alt_index"] for s in samples], dtype=np.int64),
        "image_id": np.array([s["image_id"] for s in samples], dtype=np.int64),
        "key": [s["key"] for s in samples],
    }
    for key in FEATURE_BATCH_KEYS:
        if key in samples[0]:
            batch[key] = np.stack([s[key] for s in samples])
    return batch


class BatchBuilder:
    """Samples decoded one by one straight into the rows of their batch's pixel array (no stacking copy).

    in_worker: built in a DataLoader worker process, whose batches' pixels go through shared memory."""

    def __init__(self, decoding: dict, batch_size: int, in_worker: bool):
        self.decoder = SampleDecoder(**decoding)
        self.pool = SlotPool(batch_size, self.decoder.resolution, shared=in_worker)
        self._samples, self._slot, self._pixels = [], None, None

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, raw: dict, draws=None) -> None:
        """Decode `raw` into the next row (SampleDecoder.decode's `draws`); SampleError leaves the batch as it was."""
        if self._pixels is None:
            self._slot, self._pixels = self.pool.take()
        self._samples.append(self.decoder.decode(raw, self._pixels[len(self._samples)], draws))

    def finish(self) -> dict:
        """The batch of the samples added since the last finish() (at least one)."""
        batch = collate(self._samples, self.pool.send(self._slot, self._pixels, len(self._samples)))
        self._samples, self._slot, self._pixels = [], None, None
        return batch


def decoder_settings(manifest: dict) -> dict:
    """SampleDecoder's arguments for a manifest's shards."""
    settings = manifest.get("settings") or {}
    clip, perceptual = feature_flags(manifest)
    return dict(resolution=int(settings["resolution"]), clip=clip, perceptual=perceptual,
                image_key=settings.get("image_key", fmt.KEY_JPG), resize=settings.get("resize_on_load"))


def feature_flags(manifest: dict) -> tuple:
    """(clip, perceptual): which precomputed features the manifest says every sample carries."""
    features = (manifest.get("settings") or {}).get("features") or {}
    return features.get("clip") is not None, features.get("perceptual") is not None
