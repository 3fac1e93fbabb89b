"""Shard builder throughput: 1 vs 2 worker processes, and JPEG draft-mode decoding.

Source: a COCO-2014-style folder of 512 px JPEGs; target 64 px shards, so draft mode
(decoding at 1/2, 1/4 or 1/8 scale before resizing) has the most to gain.
"""

import json
import os
import shutil
import tempfile

from common import coco_like_folder
from harness import Result, interleaved, rate

from textgan.data.building.cli import main as build


def _builder(root: str, out: str, workers: int, draft: bool):
    def run() -> int:
        shutil.rmtree(out, ignore_errors=True)
        args = ["coco", "--root", root, "--split", "train", "--outdir", out, "--resolution", "64",
                "--workers", str(workers), "--samples-per-shard", "250", "--no-progress"]
        if not draft:
            args.append("--no-draft")
        code = build(args)
        if code != 0:
            raise RuntimeError(f"shard build failed with exit code {code}")
        with open(os.path.join(out, "manifest.json")) as f:
            return json.load(f)["samples"]

    return lambda: rate(run)


def run(quick: bool = False):
    n = 100 if quick else 1500
    repeats = 1 if quick else 3
    tmp = tempfile.mkdtemp(prefix="bench-shards-")
    try:
        root = coco_like_folder(n)
        one, two = interleaved(_builder(root, f"{tmp}/w1", 1, True), _builder(root, f"{tmp}/w2", 2, True), repeats)
        full, draft = interleaved(_builder(root, f"{tmp}/nd", 1, False), _builder(root, f"{tmp}/d", 1, True), repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    setup = f"{n} COCO-layout JPEGs 512 px -> 64 px shards"
    return [
        Result("shards/workers", f"images/s with 2 worker processes over 1 ({setup})", "1 worker", "2 workers",
               one, two, "images/s",
               notes=[f"parallel efficiency with 2 workers on 2 cores: {two / one / 2:.0%} (speed-up / 2)"]),
        Result("shards/draft", f"images/s with JPEG draft-mode decoding over full decoding, 1 worker ({setup})",
               "full decode", "draft decode", full, draft, "images/s"),
    ]
