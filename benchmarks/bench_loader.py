"""Streaming loader throughput against a plain PIL loop over the same JPEG files.

Both produce uint8 RGB pixels (the loader's batches carry them; the conversion to floats in [-1, 1] runs
on the training device); the loader also reads tars, parses json, picks captions and collates batches,
with W DataLoader worker processes. The goal for W workers is W x 0.8 the plain loop's samples/s.
"""

import itertools
import os
import shutil
import tarfile
import tempfile

import numpy as np
from PIL import Image
from common import coco_like_folder
from harness import Result, interleaved, rate

from textgan.data.building.cli import main as build
from textgan.data.loading.loader import train_loader


def _extract_jpegs(shard_dir: str, dest: str) -> list:
    os.makedirs(dest, exist_ok=True)
    paths = []
    for name in sorted(os.listdir(shard_dir)):
        if name.endswith(".tar"):
            with tarfile.open(os.path.join(shard_dir, name)) as tar:
                for member in tar.getmembers():
                    if member.name.endswith(".jpg"):
                        path = os.path.join(dest, os.path.basename(member.name))
                        with open(path, "wb") as f:
                            f.write(tar.extractfile(member).read())
                        paths.append(path)
    return paths


def _pil_loop(paths: list):
    def run() -> int:
        for path in paths:
            with Image.open(path) as img:
                np.array(img.convert("RGB"))  # a copy, as the loader's decode makes
        return len(paths)

    return lambda: rate(run)


def _loader(shard_dir: str, n_samples: int, batch_size: int = 32, num_workers: int = 2):
    def run() -> int:
        loader = train_loader(shard_dir, batch_size, num_workers=num_workers, seed=0)
        batches = iter(loader)
        next(batches)  # worker start-up is a one-time cost, not throughput
        steps = max(1, n_samples // batch_size)
        count = sum(len(b["caption"]) for b in itertools.islice(batches, steps))
        return count

    def timed() -> float:
        return rate(run)

    return timed


def run(quick: bool = False):
    n = 100 if quick else 1500
    repeats = 1 if quick else 3
    tmp = tempfile.mkdtemp(prefix="bench-loader-")
    results = []
    try:
        root = coco_like_folder(n)
        for res in (64, 256):
            out = os.path.join(tmp, f"shards{res}")
            code = build(["coco", "--root", root, "--split", "train", "--outdir", out, "--resolution", str(res),
                          "--samples-per-shard", str(max(8, n // 8)), "--no-progress"])
            if code != 0:
                raise RuntimeError(f"shard build failed with exit code {code}")
            paths = _extract_jpegs(out, os.path.join(tmp, f"jpg{res}"))
            for workers in (1, 2):
                pil, loader = interleaved(_pil_loop(paths), _loader(out, n, num_workers=workers), repeats)
                results.append(Result(
                    f"loader/{res}px-{workers}w", f"samples/s of the streaming loader ({workers} worker(s), batch 32) "
                    f"over a plain PIL decode loop (1 process) on the same {len(paths)} JPEGs at {res} px; goal "
                    f">= {0.8 * workers:.1f}", "PIL loop", f"loader, {workers} worker(s)", pil, loader, "samples/s"))
            if res == 64:
                pil, inproc = interleaved(_pil_loop(paths), _loader(out, n, num_workers=0), repeats)
                results.append(Result(
                    "loader/64px-in-process", "the same with num_workers=0: the loader's per-sample cost "
                    "(tar reading, json, caption choice, collation) without worker processes", "PIL loop",
                    "loader, 0 workers", pil, inproc, "samples/s"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results
