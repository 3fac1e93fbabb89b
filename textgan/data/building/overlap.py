"""Split hygiene: which images of a split also appear (by id or by bytes) in a reference set.

The classic mistake this catches: COCO 2017 train contains most of val2014 (same image
ids, same files), so a model trained on train2017 and evaluated with a val2014 FID
reference is scored on its own training images.

A reference is one of
- a COCO root: the *other* split is used (val records -> train). The 2014 layout
  (annotations/captions_train2014.json, train2014/) is preferred; a root holding only
  the 2017 layout (captions_train2017.json, train2017/) is used as such. Ids come from
  the annotation file (or, without one, from the folder's file names); bytes are compared
  against the image folder when it exists.
- a folder of image files (e.g. train2017/): ids parsed from names such as
  000000123456.jpg or COCO_train2014_000000123456.jpg; all top-level files for bytes.
- an annotation JSON file: ids only.

Byte comparison stays cheap at COCO scale (83k files): one stat per file, and sha256 only
for files whose size equals the size of some record's file. Empty files are ignored on
both sides (identical emptiness is not a duplicate image; such files are skipped anyway),
as are records without a file on disk.
"""

import os
import re
from collections import defaultdict

from textgan.data.sources.coco import load_annotation_file, parse_images
from textgan.errors import UsageError
from textgan.files import sha256_file

_YEARS = (2014, 2017)
_OTHER_SPLIT = {"train": "val", "val": "train"}
# The image id is the last run of digits of the stem, after "_" or at its start.
_ID_IN_NAME = re.compile(r"(?:^|_)(\d+)$")


def image_id_from_name(file_name: str):
    """123456 for '000000123456.jpg' or 'COCO_train2014_000000123456.jpg'; None otherwise."""
    match = _ID_IN_NAME.search(os.path.splitext(os.path.basename(file_name))[0])
    return int(match.group(1)) if match else None


def _sha256(path: str):
    try:
        return sha256_file(path)
    except OSError:  # unreadable: cannot be shown identical, so it is not reported
        return None


def _files_by_size(folder: str) -> dict:
    """{size: [path, ...]} of the folder's non-empty top-level regular files."""
    by_size = defaultdict(list)
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file():
                size = entry.stat().st_size
                if size:
                    by_size[size].append(entry.path)
    return by_size


def _ids_from_names(paths) -> set:
    ids = (image_id_from_name(p) for p in paths)
    return {i for i in ids if i is not None}


def _ids_from_json(path: str) -> set:
    data, _ = load_annotation_file(path)
    return set(parse_images(data, path))


def _coco_root_parts(root: str, split):
    """(annotation json or None, image folder or None) of the split to compare against."""
    if split is None:
        return None, None
    other = _OTHER_SPLIT[split]
    for year in _YEARS:
        json_path = os.path.join(root, "annotations", f"captions_{other}{year}.json")
        folder = os.path.join(root, f"{other}{year}")
        json_path = json_path if os.path.isfile(json_path) else None
        folder = folder if os.path.isdir(folder) else None
        if json_path or folder:
            return json_path, folder
    raise UsageError(
        f"overlap reference {root} looks like a COCO root but has neither annotations/captions_{other}2014.json "
        f"nor {other}2014/ (nor their 2017 versions). Pass the root that holds the {other} split, its image "
        "folder, or its annotation JSON."
    )


def _is_coco_root(folder: str) -> bool:
    names = ("annotations",) + tuple(f"{s}{y}" for s in _OTHER_SPLIT for y in _YEARS)
    return any(os.path.isdir(os.path.join(folder, name)) for name in names)


def _reference(reference: str, split):
    """(reference ids, {size: [paths]} of reference files, image folder or None)."""
    if os.path.isfile(reference):
        if not reference.lower().endswith(".json"):
            raise UsageError(
                f"overlap reference {reference} is a file but not a .json annotation file; pass a COCO root, "
                "a folder of images, or a COCO annotation JSON."
            )
        return _ids_from_json(reference), {}, None
    if not os.path.isdir(reference):
        raise UsageError(
            f"overlap reference {reference} does not exist; pass a COCO root, a folder of images "
            "(e.g. train2017/), or a COCO annotation JSON."
        )
    if _is_coco_root(reference):
        json_path, folder = _coco_root_parts(reference, split)
    else:
        json_path, folder = None, reference
    by_size = _files_by_size(folder) if folder else {}
    if folder == reference and not by_size:
        raise UsageError(f"overlap reference folder {reference} holds no (non-empty) files; is it the right folder?")
    if json_path:
        return _ids_from_json(json_path), by_size, folder
    return _ids_from_names(p for paths in by_size.values() for p in paths), by_size, folder


def find_overlap(records, reference: str) -> dict:
    """{"checked_against": abs reference, "ids": [...], "bytes": [...]} for `records`.

    "ids": sorted image_ids of records whose id is also in the reference;
    "bytes": sorted image_ids of records whose file is byte-identical to a reference file.
    UsageError for a missing or unusable reference.
    """
    reference = os.path.abspath(reference)
    splits = {r.split for r in records}
    if len(splits) > 1:
        raise ValueError(f"find_overlap expects records of one split, got {sorted(splits)}")
    present = []  # (record, size) of records whose file exists and is not empty
    for record in records:
        if record.path is None:
            continue
        try:
            size = os.path.getsize(record.path)
        except OSError:
            continue
        if size:
            present.append((record, size))

    reference_ids, reference_by_size, folder = _reference(reference, next(iter(splits), None))
    own_folders = {os.path.realpath(os.path.dirname(r.path)) for r, _ in present}
    if folder and os.path.realpath(folder) in own_folders:
        # Every image would "overlap" with itself; this is a wrong argument, not a finding.
        raise UsageError(
            f"overlap reference {folder} is the folder of the images being checked; "
            "pass the OTHER split (e.g. the train images when building val)."
        )

    same_ids, same_bytes = set(), set()
    reference_hashes = {}  # path -> sha256, so each reference file is hashed at most once
    for record, size in present:
        if record.image_id in reference_ids:
            same_ids.add(record.image_id)
        candidates = reference_by_size.get(size)
        if not candidates:
            continue
        own = _sha256(record.path)
        for path in candidates:
            if path not in reference_hashes:
                reference_hashes[path] = _sha256(path)
            if own is not None and reference_hashes[path] == own:
                same_bytes.add(record.image_id)
                break
    return {"checked_against": reference, "ids": sorted(same_ids), "bytes": sorted(same_bytes)}
