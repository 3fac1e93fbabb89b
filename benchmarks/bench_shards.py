"""Shard builder throughput: 1 vs 2 worker processes, the builder against the image work alone, and JPEG
draft-mode decoding.

Source: a COCO-2014-style folder of 512 px JPEGs; target 64 px shards, so draft mode
(decoding at 1/2, 1/4 or 1/8 scale before resizing) has the most to gain. Goals: 2 workers >= 1.8x one;
the builder with one worker >= 1 / 1.2 the images/s of a plain PIL loop doing only decode + resize + encode.
"""

import io
import json
import os
import shutil
import tempfile
import time

from common import coco_like_folder
from PIL import Image, ImageOps
from harness import Result, interleaved, rate

from textgan.data.building.cli import main as build


def _build_seconds(root: str, out: str, workers: int, draft: bool, limit: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    args = ["coco", "--root", root, "--split", "train", "--outdir", out, "--resolution", "64", "--limit", str(limit),
            "--workers", str(workers), "--samples-per-shard", "250", "--no-progress"]
    if not draft:
        args.append("--no-draft")
    start = time.perf_counter()
    code = build(args)
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"shard build failed with exit code {code}")
    with open(os.path.join(out, "manifest.json")) as f:
        if json.load(f)["samples"] != limit:
            raise RuntimeError(f"the build of {limit} images wrote another number of samples")
    return seconds


def _builder(root: str, out: str, workers: int, draft: bool, n: int):
    """images/s at scale: the extra images of a build of n over one of n / 4, over the extra seconds. What a
    build costs whatever its size (starting the worker pool, ~1 s with 2 workers; reading the annotations;
    the manifest) cancels, as it does on COCO's 83k images."""
    def run() -> float:
        small = _build_seconds(root, out, workers, draft, n // 4)
        large = _build_seconds(root, out, workers, draft, n)
        return (n - n // 4) / (large - small)

    return run


def _image_work_alone(root: str):
    """The builder's per-image work with plain PIL in one process: decode (draft), crop + resize, encode."""
    folder = os.path.join(root, "train2014")
    paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))

    def run() -> int:
        for path in paths:
            with Image.open(path) as img:
                img.draft("RGB", (64, 64))
                small = ImageOps.fit(img.convert("RGB"), (64, 64), method=Image.Resampling.LANCZOS)
            small.save(io.BytesIO(), format="JPEG", quality=95)
        return len(paths)

    return lambda: rate(run)


def run(quick: bool = False):
    n = 200 if quick else 4000
    repeats = 1 if quick else 3
    tmp = tempfile.mkdtemp(prefix="bench-shards-")
    try:
        root = coco_like_folder(n)
        one, two = interleaved(_builder(root, f"{tmp}/w1", 1, True, n), _builder(root, f"{tmp}/w2", 2, True, n), repeats)
        alone, builder = interleaved(_image_work_alone(root), _builder(root, f"{tmp}/a", 1, True, n), repeats)
        full, draft = interleaved(_builder(root, f"{tmp}/nd", 1, False, n), _builder(root, f"{tmp}/d", 1, True, n),
                                  repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    setup = f"COCO-layout JPEGs 512 px -> 64 px shards; builds of {n} minus builds of {n // 4} images"
    return [
        Result("shards/workers", f"images/s with 2 worker processes over 1 ({setup})", "1 worker", "2 workers",
               one, two, "images/s",
               notes=[f"parallel efficiency with 2 workers on 2 cores: {two / one / 2:.0%} (speed-up / 2)"]),
        Result("shards/per-image", f"images/s of the builder with 1 worker over a plain PIL loop doing only the "
               f"per-image work (decode in draft mode, crop + resize, encode JPEG q95; {setup}); goal >= 1/1.2 = 0.83",
               "PIL alone", "builder, 1 worker", alone, builder, "images/s",
               notes=[f"per-image cost of the builder over the image work alone: {alone / builder:.2f}x"]),
        Result("shards/draft", f"images/s with JPEG draft-mode decoding over full decoding, 1 worker ({setup})",
               "full decode", "draft decode", full, draft, "images/s"),
    ]
