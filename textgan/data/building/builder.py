"""The shard builder: a data source (COCO 2014 or captioned shapes) -> WebDataset shards + manifest.

    cfg = BuildConfig(source="shapes", out="OUT", n=1000, resolution=32)
    result = build(cfg)          # BuildResult; result.manifest is OUT/manifest.json's content

Steps: index the source (cheap metadata) -> plan (plan.py: which record goes to which
shard, fixed before any image is read) -> check OUT (outdir.py: resume, refuse or
overwrite) -> split-hygiene check -> run the pending shards (run.py) -> manifest, last.
Everything that can be wrong with the invocation raises UsageError before OUT is touched.
"""

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field

from textgan import __version__
from textgan.data import format as fmt
from textgan.data.building.outdir import describe_os_error, prepare_out_dir, remove_files, remove_stale_tmp
from textgan.data.building.plan import plan_shards
from textgan.data.building.worker import ImageSettings
from textgan.data.manifest import (assemble_manifest, final_manifest_path, load_manifest_file,
                                   write_json_atomic)
from textgan.data.building.shard_writer import load_done_record
from textgan.errors import UsageError

BUILDER_VERSION = f"textgan-shards {__version__}"
OVERLAP_REASON = "overlaps reference split"
SOURCES = ("coco", "shapes")


class BuildWriteError(Exception):
    """Writing into OUT failed (disk full, read-only, ...): exit code 1. Finished shards are kept."""

    exit_code = 1


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class BuildConfig:
    source: str  # "coco" | "shapes"
    out: str
    split: str = "train"
    resolution: int = 256
    crop: str = "center"
    quality: int = 95
    draft: bool = True  # JPEG draft decoding (faster; changes pixels slightly, so it is a setting)
    samples_per_shard: int = 1000
    workers: int = field(default_factory=default_workers)
    seed: int = 0
    limit: int | None = None
    num_parts: int = 1
    part: int = 0
    overwrite: bool = False
    progress: bool = True
    features: object = None  # textgan.data.features.FeatureExtractor or None
    # Or a zero-argument callable making it: called only once the source has been read, so a
    # bad invocation fails before minutes of model loading.
    make_features: object = None
    # coco
    root: str | None = None
    overlap_references: list = field(default_factory=list)
    exclude_overlap: bool = False
    # shapes
    n: int = 20000
    coco_layout: str | None = None  # also write the shapes as a COCO-2014-style folder here


@dataclass
class SourceIndex:
    records: list
    skipped: list
    captions_dropped: int
    captions_dropped_by_reason: dict
    annotations_sha256: str
    annotations_file: str | None
    root: str | None = None  # COCO root, for the default overlap reference


@dataclass
class BuildResult:
    manifest: dict
    manifest_path: str
    state: str  # "new" | "resume" | "overwrite" | "complete" (nothing left to do)
    shards_written: int = 0  # by this run
    shards_reused: int = 0  # finished by an earlier (interrupted) run
    stale_tmp_removed: list = field(default_factory=list)


def check_config(cfg: BuildConfig) -> None:
    """Values the CLI validates too; repeated here for callers of the Python API."""
    problems = []
    if cfg.source not in SOURCES:
        problems.append(f"unknown source {cfg.source!r} (expected {' or '.join(SOURCES)})")
    if cfg.split not in fmt.SPLITS:
        problems.append(f"unknown split {cfg.split!r}: use one of {', '.join(fmt.SPLITS)}")
    if cfg.crop not in fmt.CROP_MODES:
        problems.append(f"unknown crop mode {cfg.crop!r}: use one of {', '.join(fmt.CROP_MODES)}")
    if cfg.resolution < 8:
        problems.append(f"resolution must be >= 8, got {cfg.resolution}")
    if not 1 <= cfg.quality <= 100:
        problems.append(f"quality must be in 1..100, got {cfg.quality}")
    if cfg.samples_per_shard < 1 or cfg.workers < 1:
        problems.append("samples per shard and workers must be >= 1")
    if cfg.limit is not None and cfg.limit < 1:
        problems.append(f"limit must be >= 1, got {cfg.limit}")
    if not 0 <= cfg.part < cfg.num_parts:
        problems.append(f"part {cfg.part} is not in 0..{cfg.num_parts - 1} (--part counts from 0)")
    if cfg.source == "coco" and not cfg.root:
        problems.append("the coco source needs --root (the COCO 2014 directory)")
    if cfg.source == "shapes" and cfg.n < 1:
        problems.append(f"n must be >= 1, got {cfg.n}")
    if problems:
        raise UsageError("; ".join(problems) + ".")


def load_source(cfg: BuildConfig) -> SourceIndex:
    if cfg.source == "coco":
        from textgan.data.sources.coco import read_coco

        index = read_coco(cfg.root, cfg.split)
        return SourceIndex(index.records, index.skipped, index.captions_dropped,
                           index.captions_dropped_by_reason, index.annotations_sha256,
                           os.path.basename(index.annotations_path), root=cfg.root)
    from textgan.data.sources.shapes import shapes_records

    records = shapes_records(cfg.n, seed=cfg.seed, split=cfg.split)
    # The generated "annotations" identify the source like the COCO file's hash does:
    # a change of the shapes generator changes this and so refuses to resume old shards.
    spec = [[r.image_id, r.file_name, r.captions, r.attributes] for r in records]
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()
    return SourceIndex(records, [], 0, {}, digest, None)


def manifest_header(cfg: BuildConfig, source: SourceIndex) -> dict:
    """Everything in the manifest that is known before the build; its settings are what
    changes the bytes of the shards."""
    settings = {
        "resolution": cfg.resolution, "crop": cfg.crop, "quality": cfg.quality, "draft": cfg.draft,
        "seed": cfg.seed, "limit": cfg.limit, "samples_per_shard": cfg.samples_per_shard,
        "num_parts": cfg.num_parts, "exclude_overlap": cfg.exclude_overlap,
        "features": cfg.features.identity() if cfg.features is not None else {"clip": None, "perceptual": None},
    }
    if cfg.source == "coco":
        settings["annotations_file"] = source.annotations_file
        settings["overlap_references"] = list(cfg.overlap_references)
    else:
        settings["n"] = cfg.n
    return {
        "format": fmt.FORMAT_NAME, "format_version": fmt.FORMAT_VERSION, "builder_version": BUILDER_VERSION,
        "source": cfg.source, "split": cfg.split, "settings": settings,
        "annotations_sha256": source.annotations_sha256,
    }


def settings_fingerprint(header: dict) -> dict:
    """What must match for a rerun to resume. Weights files count by content (sha256), not by
    where they are; the builder version does not count (only the format version does)."""
    settings = json.loads(json.dumps(header["settings"]))
    for kind, path_key in (("clip", "pretrained"), ("perceptual", "weights")):
        identity = settings["features"].get(kind)
        if identity and identity.get("weights_sha256"):
            identity.pop(path_key, None)
    return {key: header[key] for key in ("format_version", "source", "split", "annotations_sha256")} | {
        "settings": settings}


def _done_record(out_dir: str, shard):
    """The record of a finished shard whose content is the planned one, else None."""
    record = load_done_record(out_dir, shard.name)
    if record is None:
        return None
    ids = set(record.get("image_ids", [])) | {e.get("image_id") for e in record.get("skipped", [])}
    return record if ids == {r.image_id for r in shard.records} else None


def _default_overlap_references(cfg: BuildConfig, source: SourceIndex) -> list:
    """For COCO val: the same root's train split, when it is there."""
    if cfg.source != "coco" or cfg.split != "val":
        return []
    root = source.root
    for year in (2014, 2017):
        if (os.path.isfile(os.path.join(root, "annotations", f"captions_train{year}.json"))
                or os.path.isdir(os.path.join(root, f"train{year}"))):
            return [root]
    return []


def check_overlap(cfg: BuildConfig, source: SourceIndex, records: list, log) -> dict:
    """The manifest's "overlap": this build's records that also appear (same id or same bytes)
    in a reference split. Loud on stderr, because evaluating on training images is silent otherwise."""
    from textgan.data.building.overlap import find_overlap

    references = _default_overlap_references(cfg, source) + list(cfg.overlap_references)
    checked, ids, same_bytes = [], set(), set()
    for reference in references:
        found = find_overlap(records, reference)
        if found["checked_against"] not in checked:
            checked.append(found["checked_against"])
        ids.update(found["ids"])
        same_bytes.update(found["bytes"])
    overlap = {"checked_against": checked, "ids": sorted(ids), "bytes": sorted(same_bytes),
               "excluded": bool(cfg.exclude_overlap)}
    both = sorted(ids | same_bytes)
    if both:
        action = ("they are EXCLUDED (--exclude-overlap)" if cfg.exclude_overlap
                  else "they are kept; pass --exclude-overlap to drop them")
        log(f"WARNING: split overlap: {len(both)} of {len(records)} {cfg.split} images also appear in the "
            f"reference {', '.join(checked)} ({len(ids)} by image id, {len(same_bytes)} by identical bytes; "
            "a COCO root counts as its other split), "
            f"e.g. ids {', '.join(map(str, both[:10]))}; {action}.")
    return overlap


def _log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(cfg: BuildConfig, log=_log_stderr) -> BuildResult:
    """Build (or resume, or confirm) the shards of `cfg`. Raises UsageError for bad invocations
    (nothing written), BuildWriteError when writing into OUT fails (finished shards kept)."""
    check_config(cfg)
    source = load_source(cfg)
    if cfg.features is None and cfg.make_features is not None:
        cfg.features = cfg.make_features()
    header = manifest_header(cfg, source)
    if cfg.num_parts > 1:
        header["part"] = cfg.part
    plan = plan_shards(source.records, split=cfg.split, seed=cfg.seed, limit=cfg.limit,
                       samples_per_shard=cfg.samples_per_shard, part=cfg.part, num_parts=cfg.num_parts)
    planned = [r for shard in plan for r in shard.records]
    overlap = check_overlap(cfg, source, planned, log)  # may raise UsageError: before OUT is touched
    state = prepare_out_dir(cfg.out, settings_fingerprint(header), overwrite=cfg.overwrite,
                            part=cfg.part, num_parts=cfg.num_parts)
    final_path = final_manifest_path(cfg.out, cfg.part, cfg.num_parts)
    try:
        stale = remove_stale_tmp(cfg.out, cfg.part, cfg.num_parts)
        done = {s.name: rec for s in plan if (rec := _done_record(cfg.out, s)) is not None}
        if state == "resume" and len(done) == len(plan) and os.path.isfile(final_path):
            try:
                existing = load_manifest_file(final_path)
            except UsageError:  # damaged manifest: rewritten below from the shard records
                existing = None
            expected = assemble_manifest(header, [done[s.name] for s in plan], source.skipped,
                                         source.captions_dropped, source.captions_dropped_by_reason, overlap)
            if existing == expected:
                return BuildResult(existing, final_path, "complete", 0, len(plan), stale)
        # From here on the manifest would claim shards that are being (re)written: remove it first.
        remove_files(cfg.out, [os.path.basename(final_path)] + ([fmt.MANIFEST_NAME] if cfg.num_parts > 1 else []))
        if cfg.source == "shapes" and cfg.coco_layout:
            from textgan.data.sources.shapes import write_coco_layout

            write_coco_layout(cfg.coco_layout, cfg.n, seed=cfg.seed, split=cfg.split,
                              size=cfg.resolution, quality=cfg.quality)
        from textgan.data.building.run import run_shards

        excluded = set(overlap["ids"]) | set(overlap["bytes"]) if cfg.exclude_overlap else set()
        pending = [s for s in plan if s.name not in done]
        image_settings = ImageSettings(cfg.resolution, cfg.crop, cfg.quality, cfg.draft)
        written = run_shards(cfg.out, pending, image_settings, workers=cfg.workers, features=cfg.features,
                             excluded=excluded, excluded_reason=OVERLAP_REASON, progress=cfg.progress,
                             desc=f"{cfg.source} {cfg.split}" + (f" part {cfg.part}" if cfg.num_parts > 1 else ""))
        records = [done.get(s.name) or written[s.name] for s in plan]
        manifest = assemble_manifest(header, records, source.skipped, source.captions_dropped,
                                     source.captions_dropped_by_reason, overlap)
        write_json_atomic(final_path, manifest)
    except OSError as e:
        where = e.filename or cfg.out
        raise BuildWriteError(
            f"cannot write {where}: {describe_os_error(e)} [{e.strerror or e}]. Nothing half-written was kept: "
            f"the finished shards in {cfg.out} stay, and rerunning the same command resumes from them "
            "once the problem is fixed (free space, or make the directory writable)."
        ) from e
    return BuildResult(manifest, final_path, state, len(pending), len(done), stale)

