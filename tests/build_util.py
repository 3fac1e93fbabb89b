"""Helpers for the shard-builder tests (test_build*.py): run the CLI, read shards back."""

import io
import json
import os
import subprocess
import sys
import tarfile

from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_SCRIPT = os.path.join(REPO, "shards", "build.py")
PYTHON = sys.executable


def run_build(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """`python shards/build.py ARGS` in a real subprocess; stdout/stderr captured as text."""
    return subprocess.run([PYTHON, BUILD_SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def popen_build(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, BUILD_SCRIPT, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def read_manifest(out) -> dict:
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_tar(path) -> list:
    """[(key, {extension: bytes})] in tar order, read with tarfile (independently of the builder)."""
    samples = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            if not samples or samples[-1][0] != key:
                samples.append((key, {}))
            samples[-1][1][ext] = tar.extractfile(member).read()
    return samples


def all_samples(out, manifest=None) -> list:
    """Every sample of a build, in manifest shard order: [(shard name, key, entries)]."""
    manifest = manifest or read_manifest(out)
    return [(shard["name"], key, entries) for shard in manifest["shards"]
            for key, entries in read_tar(os.path.join(out, shard["name"]))]


def decode(jpeg: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(jpeg))
    img.load()
    return img


def shard_files(out) -> dict:
    """{name: bytes} of every file the builder leaves in out (tars, records, manifests, settings)."""
    return {name: read_bytes(os.path.join(out, name)) for name in sorted(os.listdir(out))}
