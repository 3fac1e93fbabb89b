"""`textgan shards index DIR_OR_PATTERN`: a manifest for WebDataset shards written by other tools.

Researchers already hold COCO and LAION-style data as img2dataset shards: tars named 00000.tar ... whose
samples are `KEY.jpg` (or png/webp), `KEY.txt` (the caption) and `KEY.json` (url, key, size, ...), each
tar with a parquet sidecar (00000.parquet: one row per URL tried, `status` "success" for those written)
and a stats file (00000_stats.json: "successes", ...). Indexing writes manifest.json next to the tars so
that training, evaluation and `verify` read them as they read shards built by textgan; the tars are
never rewritten.

Counts come from the sidecars when there are any (parquet first, then the stats file: reading them is
instant where scanning 40,000 LAION tars is not), else from a scan of the tar's headers. A tar whose end
is not a tar's end (it must close with zero blocks) is scanned whatever its sidecars say, and its
readable count is what the manifest lists: the samples lost are reported as damage here, once, instead
of as skips every time training draws the shard. `--scan` scans every tar and reports where the
sidecars disagree.

The images are used as stored when they are RESOLUTION x RESOLUTION, else center-cropped and resized
when loaded (img2dataset's keep_ratio / no-resize modes): settings.resize_on_load.
"""

from __future__ import annotations

import glob
import io
import os
import tarfile
from dataclasses import dataclass, field

from braceexpand import braceexpand
from PIL import Image

from textgan.data import format as fmt
from textgan.data.building.builder import BUILDER_VERSION
from textgan.data.manifest import load_manifest_file, manifest_path, read_json, write_json_atomic
from textgan.errors import UsageError
from textgan.ranges import RESOLUTIONS, resolutions_text

SOURCE_NAME = "img2dataset"
IMAGE_KEYS = ("jpg", "png", "webp", "jpeg")  # img2dataset's --encode_format choices (+ jpeg)
_TAR_BLOCK = 512


@dataclass
class ShardCount:
    name: str
    samples: int
    counted_from: str  # parquet | stats | scan
    sidecar: int | None = None  # what a sidecar said, when a scan was made too
    damage: str | None = None  # why the tar holds fewer samples than its sidecar says


@dataclass
class IndexResult:
    manifest: dict
    path: str
    counts: list = field(default_factory=list)  # ShardCount per tar, in manifest order


def expand_source(source: str) -> tuple[str, list]:
    """(directory, sorted tar file names) of a directory, a brace pattern ({00000..00099}.tar), a glob or
    one tar. All tars must lie in one directory: the manifest lists them by name next to itself."""
    if os.path.isdir(source):
        directory = source
        names = sorted(n for n in os.listdir(source) if n.endswith(".tar"))
        if not names:
            raise UsageError(f"{source} holds no .tar files; pass the directory of the shards or a pattern "
                             "like DIR/{00000..00099}.tar.")
        return directory, names
    paths = [p for pattern in braceexpand(source) for p in (sorted(glob.glob(pattern))
                                                               if glob.has_magic(pattern) else [pattern])]
    if not paths:
        raise UsageError(f"{source} matches no files; pass a directory, DIR/{{00000..00099}}.tar or DIR/*.tar.")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UsageError(f"{source}: {len(missing)} of {len(paths)} tars do not exist ({', '.join(missing[:3])}{more}); "
                         "fix the pattern, or index the directory to take the tars that are there.")
    not_tars = [p for p in paths if not p.endswith(".tar")]
    if not_tars:
        raise UsageError(f"{source}: {not_tars[0]} is not a .tar file; the pattern must name the shards' tars.")
    directories = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if len(directories) > 1:
        raise UsageError(f"{source} names tars in {len(directories)} directories ({', '.join(sorted(directories)[:2])}, ...); "
                         "index each directory on its own: a manifest lists the tars next to it.")
    return directories.pop(), sorted({os.path.basename(p) for p in paths})


def tar_ends_cleanly(path: str) -> bool:
    """Whether the file ends like a finished tar: a whole number of 512-byte blocks, the last two zero
    (the end-of-archive marker). A tar cut short by a failed copy or a killed writer does not; reading
    two blocks is enough to tell, where counting its samples means reading every header."""
    size = os.path.getsize(path)
    if size < 2 * _TAR_BLOCK or size % _TAR_BLOCK:
        return False
    with open(path, "rb") as f:
        f.seek(size - 2 * _TAR_BLOCK)
        return f.read(2 * _TAR_BLOCK) == bytes(2 * _TAR_BLOCK)


def _sample_key(member_name: str) -> tuple[str, str]:
    """(key, extension) as WebDataset groups files: the base name up to its first dot, and the rest."""
    key, _, ext = os.path.basename(member_name).partition(".")
    return os.path.join(os.path.dirname(member_name), key), ext.lower()


def scan_tar(path: str) -> tuple[int, str | None]:
    """(complete samples, image key of the first one) of a tar, from its headers alone: a sample counts
    when it has an image and a json (img2dataset writes both for every sample; the loader needs both) and
    every file of it lies wholly inside the file. Stops quietly at a cut (a truncated tar gives the samples
    before it)."""
    size = os.path.getsize(path)
    complete, image_key = 0, None
    current, exts, whole = None, set(), True

    def close():
        nonlocal complete, image_key
        if current is not None and whole and (exts & set(IMAGE_KEYS)) and "json" in exts:
            complete += 1
            image_key = image_key or next(k for k in IMAGE_KEYS if k in exts)

    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _sample_key(member.name)
                if key != current:
                    close()
                    current, exts, whole = key, set(), True
                exts.add(ext)
                whole = whole and member.offset_data + member.size <= size
    except (tarfile.TarError, OSError, EOFError):
        pass  # a cut in the middle of a header: what came before counts
    close()
    return complete, image_key


def sidecar_count(directory: str, tar_name: str) -> tuple[int, str] | None:
    """(successes, "parquet" | "stats") from img2dataset's sidecars of a tar, or None without any.
    parquet: rows whose status is "success" (every row when there is no status column)."""
    stem = tar_name[:-len(".tar")]
    parquet = os.path.join(directory, stem + ".parquet")
    if os.path.isfile(parquet):
        import pyarrow.parquet as pq  # only for indexing: loading and training never need it

        try:
            sidecar = pq.ParquetFile(parquet)
            if "status" not in sidecar.schema_arrow.names:
                return sidecar.metadata.num_rows, "parquet"
            # the status column alone: the urls and captions are most of a LAION sidecar's bytes
            statuses = sidecar.read(columns=["status"]).column("status").to_pylist()
        except Exception as e:  # pyarrow raises its own error types for a damaged file
            raise UsageError(f"{parquet} does not read as parquet ({e}); delete or restore it, or pass --scan "
                             "to count the tar's samples from the tar itself.") from e
        return sum(1 for s in statuses if s == "success"), "parquet"
    stats = os.path.join(directory, stem + "_stats.json")
    if os.path.isfile(stats):
        try:
            successes = read_json(stats)["successes"]
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"{stats} has no readable \"successes\" count ({e!r}); delete or restore it, or pass "
                             "--scan.") from e
        if isinstance(successes, bool) or not isinstance(successes, int) or successes < 0:
            raise UsageError(f"{stats}: \"successes\" is {successes!r}, not a count; delete or restore it, or pass --scan.")
        return successes, "stats"
    return None


def count_shard(directory: str, name: str, scan: bool) -> tuple[ShardCount, str | None]:
    """How many samples a tar serves, and the image key seen when it was scanned."""
    path = os.path.join(directory, name)
    try:
        sidecar = sidecar_count(directory, name)
    except UsageError:
        if not scan:
            raise
        sidecar = None  # --scan counts from the tar; an unreadable sidecar has nothing to compare
    clean = tar_ends_cleanly(path)
    if sidecar is not None and clean and not scan:
        return ShardCount(name, sidecar[0], sidecar[1]), None
    readable, image_key = scan_tar(path)
    count = ShardCount(name, readable, "scan", sidecar=None if sidecar is None else sidecar[0])
    if not clean:
        count.damage = "truncated: the tar does not end with tar's end-of-archive blocks"
    elif sidecar is not None and readable != sidecar[0]:
        count.damage = f"its {sidecar[1]} sidecar says {sidecar[0]} samples"
    return count, image_key


def _first_image(directory: str, names: list) -> tuple[str, tuple[int, int]]:
    """(image key, (width, height)) of the first sample of the first tar that has one."""
    for name in names:
        try:
            with tarfile.open(os.path.join(directory, name), mode="r:") as tar:
                for member in tar:
                    ext = _sample_key(member.name)[1]
                    if member.isfile() and ext in IMAGE_KEYS:
                        with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                            return ext, img.size
        except (tarfile.TarError, OSError, EOFError):
            continue
    raise UsageError(f"{directory}: no tar holds a readable image ({'/'.join(IMAGE_KEYS)}); is this a WebDataset "
                     "image dataset?")


def _resolution(resolution: int | None, size: tuple[int, int], where: str) -> int:
    if resolution is not None:
        if resolution not in RESOLUTIONS:
            raise UsageError(f"--resolution must be one of {resolutions_text()}, got {resolution}.")
        return resolution
    if size[0] == size[1] and size[0] in RESOLUTIONS:
        return size[0]
    raise UsageError(f"{where}: the first image is {size[0]}x{size[1]}, not a square side training accepts "
                     f"({resolutions_text()}); pass --resolution R and images are center-cropped and resized to "
                     "R x R when loaded.")


def _refuse_foreign_manifest(directory: str) -> None:
    path = manifest_path(directory)
    if not os.path.isfile(path):
        return
    try:
        existing = load_manifest_file(path)
    except UsageError:
        raise UsageError(f"{path} exists and is not a textgan manifest; move it away before indexing "
                         f"{directory} (the index writes {fmt.MANIFEST_NAME} there).") from None
    if existing.get("source") != SOURCE_NAME:
        raise UsageError(f"{directory} already holds shards built by textgan ({fmt.MANIFEST_NAME}, source "
                         f"{existing.get('source')!r}); they need no index. Verify them with `textgan shards verify "
                         f"{directory}`.")


def index_shards(source: str, resolution: int | None = None, split: str = "train", scan: bool = False,
                 progress=None) -> IndexResult:
    """Write DIR/manifest.json for the img2dataset-style tars that `source` names (see module doc).
    Re-indexing replaces a manifest written by an earlier index; a textgan-built one is refused."""
    if split not in fmt.SPLITS:
        raise UsageError(f"--split must be one of {', '.join(fmt.SPLITS)}, got {split!r}.")
    directory, names = expand_source(source)
    _refuse_foreign_manifest(directory)
    image_key, size = _first_image(directory, names)
    resolution = _resolution(resolution, size, source)
    counts = []
    for name in names:
        count, scanned_key = count_shard(directory, name, scan)
        if scanned_key is not None and scanned_key != image_key:
            raise UsageError(f"{os.path.join(directory, name)} stores its images as .{scanned_key}, the first tar "
                             f"as .{image_key}; index shards of one encode format at a time.")
        counts.append(count)
        if progress is not None:
            progress(count)
    if sum(c.samples for c in counts) == 0:
        raise UsageError(f"{source}: no tar holds a complete sample (an image and its json); nothing to train on.")
    manifest = {
        "format": fmt.FORMAT_NAME, "format_version": fmt.FORMAT_VERSION, "builder_version": BUILDER_VERSION,
        "source": SOURCE_NAME, "split": split,
        "settings": {"resolution": resolution, "resize_on_load": "center", "image_key": image_key,
                     "first_image_size": list(size), "indexed_from": source,
                     "features": {"clip": None, "perceptual": None}},
        "annotations_sha256": None,
        # Not hashed: reading every byte of a LAION-sized set to index it is what indexing avoids.
        "shards": [{"name": c.name, "samples": c.samples, "sha256": None} for c in counts],
        "samples": sum(c.samples for c in counts),
        "counted_from": {k: sum(1 for c in counts if c.counted_from == k) for k in ("parquet", "stats", "scan")},
        "damaged": [{"name": c.name, "readable": c.samples, "sidecar": c.sidecar, "reason": c.damage}
                    for c in counts if c.damage],
        "skipped": [], "captions_dropped": 0, "captions_dropped_by_reason": {},
        "overlap": {"checked_against": [], "ids": [], "bytes": [], "excluded": False},
    }
    path = manifest_path(directory)
    try:
        write_json_atomic(path, manifest)
    except OSError as e:
        raise UsageError(f"cannot write {path} ({e.strerror}); indexing writes the manifest next to the tars, so "
                         "the directory must be writable (copy or link the tars into one that is).") from e
    return IndexResult(manifest, path, counts)


def describe(result: IndexResult) -> str:
    """The command's summary: what was indexed, where the counts came from, what is damaged."""
    m = result.manifest
    froms = ", ".join(f"{n} from {k}" for k, n in m["counted_from"].items() if n)
    lines = [f"indexed {len(m['shards'])} tars, {m['samples']} samples at {m['settings']['resolution']} px "
             f"(images .{m['settings']['image_key']}, first {m['settings']['first_image_size'][0]}x"
             f"{m['settings']['first_image_size'][1]}; counts: {froms})"]
    for d in m["damaged"]:
        lines.append(f"DAMAGED: {d['name']}: {d['readable']} readable samples; {d['reason']}")
    lines.append(f"output: {os.path.abspath(result.path)}")
    lines.append(f"train on it with: --set data.shards={os.path.dirname(os.path.abspath(result.path))}")
    return "\n".join(lines)

