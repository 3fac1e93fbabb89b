"""Reading a COCO 2014 captions split into Records (metadata only; images are not opened).

Layout (as unpacked from the official train2014.zip, val2014.zip, annotations_trainval2014.zip):
    ROOT/annotations/captions_{train,val}2014.json
    ROOT/{train,val}2014/COCO_{split}2014_000000xxxxxx.jpg

Decisions:
- Captions are normalized (normalize_caption) and deduplicated per image by exact text
  after normalization, keeping the annotation file's order. Dropped captions are counted
  by reason: "whitespace-only caption", "unknown image id", "duplicate caption".
- Images left with no usable caption are skipped with reason "no captions".
- A duplicate image id in "images" is a UsageError, not a skip: sample keys are image ids,
  so two entries with one id cannot both be stored, and picking one would silently attach
  captions to the wrong file. Such a file is not an official COCO annotation file.
- Structurally malformed entries (no int id, no file name, non-string caption) are a
  UsageError naming the entry: the file is corrupt or not COCO, and guessing is worse.
"""

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass

from textgan.data import format as fmt
from textgan.data.records import Record, skipped_entry
from textgan.errors import UsageError

YEAR = 2014
_DOWNLOAD_HINT = "COCO 2014 captions come as annotations/captions_{split}2014.json (from annotations_trainval2014.zip)"


def normalize_caption(text) -> str:
    """Strip, and collapse every run of whitespace (spaces, tabs, newlines) to one space.
    "" for whitespace-only text and for anything that is not a string."""
    if not isinstance(text, str):
        return ""
    return " ".join(text.split())


def _check_split(split: str) -> None:
    if split not in fmt.SPLITS:
        raise UsageError(
            f"unknown split {split!r}: COCO 2014 has the splits {', '.join(fmt.SPLITS)}; use one of those."
        )


def annotation_path(root: str, split: str) -> str:
    _check_split(split)
    return os.path.join(root, "annotations", f"captions_{split}{YEAR}.json")


def image_dir(root: str, split: str) -> str:
    _check_split(split)
    return os.path.join(root, f"{split}{YEAR}")


@dataclass
class CocoIndex:
    records: list  # [Record], sorted by image_id
    skipped: list  # [records.skipped_entry(...)], sorted by image_id
    captions_dropped: int
    captions_dropped_by_reason: dict  # reason -> count, only reasons that occurred
    annotations_sha256: str
    annotations_path: str
    split: str = ""
    image_dir: str = ""


def load_annotation_file(path: str) -> tuple[dict, str]:
    """Parse a COCO annotation JSON -> (data, sha256 of its bytes).

    UsageError when the file is missing, not JSON, or lacks the "images"/"annotations"
    lists. Entries are checked by parse_images / read_coco.
    """
    if not os.path.isfile(path):
        raise UsageError(f"annotation file {path} does not exist (or is not a file).")
    with open(path, "rb") as f:
        raw = f.read()
    sha256 = hashlib.sha256(raw).hexdigest()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UsageError(
            f"{path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos}). "
            "The file is probably truncated or corrupted; download and unpack it again."
        ) from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text ({e}); it is not a COCO annotation file.") from None
    if not isinstance(data, dict):
        raise UsageError(
            f"{path} holds a JSON {type(data).__name__}, not an object with \"images\" and \"annotations\"; "
            "it is not a COCO captions file."
        )
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            problem = f'has no "{key}"' if key not in data else f'has "{key}" as a {type(data[key]).__name__}'
            raise UsageError(
                f"{path} {problem}; a COCO captions file has \"images\" and \"annotations\" lists. "
                "Check that this is a captions_*.json file (not instances_* or person_keypoints_*)."
            )
    return data, sha256


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_images(data: dict, path: str) -> dict:
    """The "images" list -> {image_id: file_name}; UsageError naming any malformed entry."""
    names = {}
    first_index = {}
    for i, entry in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{where} is not an object (got {entry!r:.60}); the annotation file is malformed.")
        image_id, file_name = entry.get("id"), entry.get("file_name")
        if not _is_int(image_id):
            raise UsageError(f"{where} has no integer \"id\" (got {image_id!r}); the annotation file is malformed.")
        if not isinstance(file_name, str) or not file_name or os.path.basename(file_name) != file_name:
            raise UsageError(
                f"{where} (id {image_id}) has no plain \"file_name\" (got {file_name!r}); "
                "COCO file names are bare names like COCO_val2014_000000000042.jpg."
            )
        if image_id in names:
            raise UsageError(
                f"{where} repeats image id {image_id} of images[{first_index[image_id]}]; sample keys are image ids, "
                "so the file is ambiguous. Use the official COCO annotation file, or remove the duplicate entry."
            )
        names[image_id] = file_name
        first_index[image_id] = i
    return names


def read_coco(root: str, split: str) -> CocoIndex:
    """Index one COCO 2014 split: Records with normalized captions, plus what was dropped and why."""
    _check_split(split)
    if not os.path.isdir(root):
        what = "is not a directory" if os.path.exists(root) else "does not exist"
        raise UsageError(
            f"COCO root {root} {what}. Pass the directory that holds annotations/ and {split}{YEAR}/ "
            f"(unpacked from {split}{YEAR}.zip and annotations_trainval{YEAR}.zip)."
        )
    root = os.path.abspath(root)
    path = annotation_path(root, split)
    if not os.path.isfile(path):
        message = f"annotation file {path} not found. {_DOWNLOAD_HINT.format(split=split)}; unpack it into {root}."
        if os.path.isfile(os.path.join(root, "annotations", f"captions_{split}2017.json")):
            message += (
                f" This root holds COCO 2017 captions (captions_{split}2017.json); the builder reads the 2014 splits."
            )
        raise UsageError(message)
    data, sha256 = load_annotation_file(path)
    names = parse_images(data, path)

    captions = {image_id: [] for image_id in names}
    dropped = Counter()
    for i, entry in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{where} is not an object (got {entry!r:.60}); the annotation file is malformed.")
        image_id, caption = entry.get("image_id"), entry.get("caption")
        if not _is_int(image_id):
            raise UsageError(
                f"{where} has no integer \"image_id\" (got {image_id!r}); the annotation file is malformed."
            )
        if not isinstance(caption, str):
            raise UsageError(
                f"{where} has no string \"caption\" (got {caption!r}); "
                "is this a captions_*.json file and not instances_*.json?"
            )
        if image_id not in captions:
            dropped["unknown image id"] += 1
            continue
        text = normalize_caption(caption)
        if not text:
            dropped["whitespace-only caption"] += 1
        elif text in captions[image_id]:
            dropped["duplicate caption"] += 1
        else:
            captions[image_id].append(text)

    directory = image_dir(root, split)
    records, skipped = [], []
    for image_id in sorted(names):
        if captions[image_id]:
            path_on_disk = os.path.join(directory, names[image_id])
            records.append(Record(image_id, names[image_id], captions[image_id], split, path=path_on_disk))
        else:
            skipped.append(skipped_entry(image_id, names[image_id], "no captions"))
    return CocoIndex(
        records=records,
        skipped=skipped,
        captions_dropped=sum(dropped.values()),
        captions_dropped_by_reason=dict(sorted(dropped.items())),
        annotations_sha256=sha256,
        annotations_path=path,
        split=split,
        image_dir=directory,
    )
