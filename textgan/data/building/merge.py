"""Combining the part manifests of a split build (--num-parts K --part i) into manifest.json.

Each part of a cluster array job writes its own shards (names carry the part) and its own
manifest.part-III-of-KKK.json into the same OUT. `merge OUT` checks that all K parts are
there and were built with identical settings from the identical source, then writes the
manifest of the whole set: shards in part order, skipped and overlap as unions. The
source-level facts (images without captions, dropped captions) are the same in every part
(each part indexes the whole source), so they are taken once.
"""

import os

from textgan.data import format as fmt
from textgan.data.manifest import (find_part_manifests, load_manifest_file, manifest_path,
                                   part_manifest_path, shard_path, sorted_unique_skipped, write_json_atomic)
from textgan.errors import UsageError

# Must be equal in every part manifest.
_SAME_IN_ALL_PARTS = ("format", "format_version", "builder_version", "source", "split", "settings",
                      "annotations_sha256", "captions_dropped", "captions_dropped_by_reason")


def merge_parts(out_dir: str) -> dict:
    """Write OUT/manifest.json from OUT's part manifests and return it; UsageError naming what
    is missing or inconsistent (nothing is written then)."""
    found = find_part_manifests(out_dir)
    if not found:
        raise UsageError(f"{out_dir} holds no part manifests ({fmt.PART_MANIFEST_PATTERN.format(part=0, num_parts=2)}, "
                         "...): build the parts with --num-parts K --part i into this --outdir first.")
    counts = sorted({k for _, k in found})
    if len(counts) > 1:
        raise UsageError(f"{out_dir} holds part manifests of builds split into different numbers of parts "
                         f"({', '.join(map(str, counts))}); rebuild with one --num-parts (use --overwrite).")
    num_parts = counts[0]
    missing = [i for i in range(num_parts) if (i, num_parts) not in found]
    if missing:
        names = ", ".join(os.path.basename(part_manifest_path(out_dir, i, num_parts)) for i in missing)
        raise UsageError(
            f"cannot merge {out_dir}: part(s) {', '.join(map(str, missing))} of {num_parts} are not finished "
            f"(missing {names}). Run the build with --num-parts {num_parts} --part I for each of them "
            "(an interrupted part resumes), then merge again.")
    parts = [load_manifest_file(found[(i, num_parts)]) for i in range(num_parts)]
    first = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        differing = [key for key in _SAME_IN_ALL_PARTS if part.get(key) != first.get(key)]
        if differing:
            raise UsageError(
                f"cannot merge {out_dir}: part {i} differs from part 0 in {', '.join(differing)}; "
                "all parts must be built from the same source with the same options. Rebuild the odd part.")
    merged = {key: first[key] for key in _SAME_IN_ALL_PARTS}
    shards = [shard for part in parts for shard in part["shards"]]
    absent = [s["name"] for s in shards if not os.path.isfile(shard_path(out_dir, s))]
    if absent:
        raise UsageError(f"cannot merge {out_dir}: shard(s) {', '.join(absent[:5])} listed by the part manifests "
                         "are missing. Rerun the build of their part (it rebuilds missing shards), then merge again.")
    overlap = {
        "checked_against": sorted({ref for p in parts for ref in p["overlap"]["checked_against"]}),
        "ids": sorted({i for p in parts for i in p["overlap"]["ids"]}),
        "bytes": sorted({i for p in parts for i in p["overlap"]["bytes"]}),
        "excluded": first["overlap"]["excluded"],
    }
    merged.update(
        shards=shards,
        samples=sum(s["samples"] for s in shards),
        skipped=sorted_unique_skipped(e for p in parts for e in p["skipped"]),
        overlap=overlap,
    )
    write_json_atomic(manifest_path(out_dir), merged)
    return merged
