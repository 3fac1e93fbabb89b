"""Reading and writing a shard directory's manifest.json (and its siblings).

Everything the builder writes as JSON goes through `write_json_atomic`: the
bytes are deterministic (sorted keys, fixed indent) so that an interrupted and
resumed build ends with exactly the same files as an uninterrupted one, and a
reader never sees a half-written file (tmp + fsync + os.replace).
"""

import json
import os
import re

from textgan.atomic import fsync_dir, write_bytes_atomic  # noqa: F401  (re-exported for the builder)
from textgan.data import format as fmt
from textgan.errors import UsageError

# Written first by every build: everything that changes the bytes of the shards.
# A rerun compares against it to decide between "resume" and "refuse".
BUILD_SETTINGS_NAME = "build_settings.json"

_PART_RE = re.compile(r"^manifest\.part-(\d{3})-of-(\d{3})\.json$")


def manifest_path(out_dir: str) -> str:
    return os.path.join(out_dir, fmt.MANIFEST_NAME)


def part_manifest_path(out_dir: str, part: int, num_parts: int) -> str:
    return os.path.join(out_dir, fmt.PART_MANIFEST_PATTERN.format(part=part, num_parts=num_parts))


def final_manifest_path(out_dir: str, part: int, num_parts: int) -> str:
    """Where a build writes its manifest: manifest.json, or its part manifest when split."""
    return manifest_path(out_dir) if num_parts == 1 else part_manifest_path(out_dir, part, num_parts)


def settings_path(out_dir: str) -> str:
    return os.path.join(out_dir, BUILD_SETTINGS_NAME)


def find_part_manifests(out_dir: str) -> dict:
    """{(part, num_parts): path} of the part manifests present in out_dir."""
    found = {}
    if os.path.isdir(out_dir):
        for name in sorted(os.listdir(out_dir)):
            m = _PART_RE.match(name)
            if m:
                found[(int(m.group(1)), int(m.group(2)))] = os.path.join(out_dir, name)
    return found


def dumps(obj) -> bytes:
    """The one JSON encoding of the builder: byte-identical for equal content."""
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def write_json_atomic(path: str, obj) -> None:
    write_bytes_atomic(path, dumps(obj))


def read_json(path: str):
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def load_manifest(out_dir: str) -> dict:
    """The manifest of a finished shard directory; UsageError (exit 2) when there is none."""
    path = manifest_path(out_dir)
    if not os.path.isfile(path):
        raise UsageError(
            f"{out_dir} has no {fmt.MANIFEST_NAME}: it is not a finished shard directory. "
            f"Build it with `python shards/build.py shapes|coco --outdir {out_dir} ...` "
            "(an interrupted build finishes when rerun with the same command)."
        )
    return load_manifest_file(path)


def load_manifest_file(path: str) -> dict:
    """A manifest or part manifest by path, checked to be ours; UsageError otherwise."""
    try:
        manifest = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not valid JSON ({e}); rebuild the shards or restore the file.") from e
    if not isinstance(manifest, dict) or manifest.get("format") != fmt.FORMAT_NAME:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise UsageError(f"{path} is not a textgan shard manifest (format={got!r}).")
    check_shard_entries(manifest, path)
    return manifest


def check_shard_entries(manifest: dict, path: str) -> None:
    """UsageError unless every shards[] entry names a plain file inside the manifest's directory.
    Readers join these names to the shard directory: a name like `../x.tar` or `/etc/x` would make
    the loader, verify, merge or the metrics read (and merge vouch for) files outside it."""
    shards = manifest.get("shards", [])
    if not isinstance(shards, list):
        raise UsageError(f"{path}: \"shards\" must be a list of {{name, samples, sha256}} entries, got "
                         f"{type(shards).__name__}; rebuild the shards or restore the file.")
    for i, entry in enumerate(shards):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not is_plain_file_name(name):
            raise UsageError(
                f"{path}: shards[{i}] has name {name!r}, which is not a plain file name in the shard directory "
                "(no directory part, no '..', not absolute); a manifest may only list tars that lie next to it. "
                "Rebuild the shards, or restore the manifest the builder wrote.")
        samples = entry.get("samples")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise UsageError(f"{path}: shards[{i}] ({name}) has samples={samples!r}; it must be an integer >= 0. "
                             "Rebuild the shards, or restore the manifest the builder wrote.")


def is_plain_file_name(name) -> bool:
    """A single path component naming a file: not empty, '.', '..', absolute, or with a separator."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name
            and "/" not in name and "\\" not in name and os.path.basename(name) == name)


def shard_path(shards_dir: str, entry: dict) -> str:
    """The path of a manifest's shard entry; every reader joins names through this (it re-checks the
    name, for manifests that did not come through load_manifest_file)."""
    name = entry.get("name") if isinstance(entry, dict) else None
    if not is_plain_file_name(name):
        raise UsageError(f"{shards_dir}: manifest shard name {name!r} is not a plain file name in the shard "
                         "directory; rebuild the shards, or restore the manifest the builder wrote.")
    return os.path.join(shards_dir, name)


def skipped_sort_key(entry: dict):
    """Skipped entries sort by id (None = no id, e.g. a caption for an unknown image, first)."""
    image_id = entry.get("image_id")
    return (image_id is not None, image_id if isinstance(image_id, int) else -1,
            str(entry.get("file_name")), str(entry.get("reason")))


def sorted_unique_skipped(entries) -> list:
    seen, out = set(), []
    for e in sorted(entries, key=skipped_sort_key):
        ident = dumps(e)
        if ident not in seen:
            seen.add(ident)
            out.append(e)
    return out


def assemble_manifest(header: dict, shard_records: list, source_skipped: list,
                      captions_dropped: int, captions_dropped_by_reason: dict, overlap: dict) -> dict:
    """The manifest of a (part of a) build, from its header (format, versions, source, split,
    settings, annotations_sha256, part fields), the finished shards' records in plan order,
    and the source-level facts. Holds nothing run-dependent (no times, no output path)."""
    shards = [{"name": r["name"], "samples": r["samples"], "sha256": r["sha256"]} for r in shard_records]
    skipped = list(source_skipped)
    for r in shard_records:
        skipped.extend(r["skipped"])
    manifest = dict(header)
    manifest.update(
        shards=shards,
        samples=sum(s["samples"] for s in shards),
        skipped=sorted_unique_skipped(skipped),
        captions_dropped=int(captions_dropped),
        captions_dropped_by_reason={k: int(v) for k, v in sorted(captions_dropped_by_reason.items())},
        overlap=overlap,
    )
    return manifest
