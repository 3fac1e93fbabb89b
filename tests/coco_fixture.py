"""A tiny COCO-2014-style tree with every case that breaks image pipelines, plus its expectations.

    from tests.coco_fixture import make_coco_fixture   (or `from coco_fixture import ...`)
    expect = make_coco_fixture(tmp_path / "coco")

builds ROOT/annotations/captions_{train,val}2014.json and ROOT/{train,val}2014/*.jpg and
returns what a correct reader/builder must produce (all ids are ints):

    expect["train"] / expect["val"]:
        good_ids        ids that must end up as samples (sorted)
        skip            {id: reason} of every listed image that must NOT be a sample
        skip_reading    the part of `skip` that read_coco reports ("no captions")
        skip_image      the part of `skip` that image processing reports (ImageSkip reasons)
        captions        {id: [normalized captions]} for every record read_coco returns
        sizes           {id: (width, height)} original size after EXIF orientation, good ids
        file_names      {id: file_name} of every listed image
        captions_dropped, captions_dropped_by_reason
    expect["overlap"]        find_overlap(val records, ROOT): {"ids": [...], "bytes": [...]}
    expect["overlap_train"]  find_overlap(train records, ROOT)
    expect["cases"]          name -> image id of each special case (e.g. "exif_rotated")
    expect["root"]           absolute ROOT

Everything is deterministic (seeded pixels, fixed JPEG settings), at most 80 px except
the 400x4 extreme-aspect image, so building it takes a few milliseconds.
"""

import io
import json
import os

import numpy as np
from PIL import Image

GOOD_TRAIN_SIZES = {
    1: (80, 60), 2: (60, 80), 3: (64, 64), 4: (72, 40), 5: (40, 72), 6: (80, 80), 7: (50, 30), 8: (33, 77),
}
GOOD_VAL_SIZES = {101: (80, 64), 102: (48, 80), 103: (70, 70), 104: (77, 33)}

CASES = {
    "gray": 9,
    "cmyk": 10,
    "png_as_jpg": 11,
    "exif_rotated": 12,
    "tiny": 13,
    "extreme_aspect": 14,
    "empty": 15,
    "truncated": 16,
    "not_image": 17,
    "missing": 18,
    "no_captions": 19,
    "only_blank_captions": 20,
    "unknown_caption_id": 999,  # a caption points here; no image has this id
    "multiline_caption": 2,
    "blank_caption": 1,  # a good image that also has a whitespace-only caption
    "duplicate_caption": 3,
    "val_same_bytes": 105,  # byte copy of train image 1
    "val_same_id": 5,  # val image whose id is also a train id (different pixels)
    "val_missing": 106,
    "val_empty": 107,
}

# Colours the tests check after decoding.
CMYK_RGB = (200, 40, 40)  # written as CMYK; must come back close to this in RGB
EXIF_BACKGROUND = (0, 0, 255)  # blue
EXIF_HALF = (255, 0, 0)  # red: stored TOP half -> displayed RIGHT half after orientation 6
EXIF_CORNER = (0, 255, 0)  # green: stored top-left 10x10 -> displayed top-right corner
EXIF_STORED_SIZE = (60, 40)
PNG_OPAQUE = (255, 0, 0)  # left half of the RGBA PNG; right half is transparent -> white

MULTILINE_RAW = "  A cat\n sitting   on a\tmat.  "
MULTILINE_NORMALIZED = "A cat sitting on a mat."

_PHRASES = [
    "A {c} scene with a few objects in image {i}.",
    "Something {c} sits in the middle of frame {i}.",
    "Photo {i} showing mostly {c} shapes.",
    "An image numbered {i} of {c} things on a table.",
    "A close-up of a {c} object, picture {i}.",
]
_COLOUR_WORDS = ["red", "green", "blue", "yellow", "purple", "orange", "grey"]


def coco_file_name(split: str, image_id: int) -> str:
    return f"COCO_{split}2014_{image_id:012d}.jpg"


def _captions(image_id: int) -> list:
    colour = _COLOUR_WORDS[image_id % len(_COLOUR_WORDS)]
    return [p.format(c=colour, i=image_id) for p in _PHRASES[: 2 + image_id % 4]]


def _jpeg(img: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=95, **kwargs)
    return buffer.getvalue()


def _picture(image_id: int, size) -> Image.Image:
    """Smooth colour gradient plus a block, different for each id (seeded)."""
    rng = np.random.default_rng(image_id)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 215, size=3)
    slope = rng.uniform(-1.5, 1.5, size=(3, 2))
    pixels = np.stack([base[c] + slope[c, 0] * x + slope[c, 1] * y for c in range(3)], axis=-1)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = rng.uniform(0, 255, size=3)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _exif_rotated_jpeg() -> bytes:
    width, height = EXIF_STORED_SIZE
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:] = EXIF_BACKGROUND
    pixels[: height // 2] = EXIF_HALF
    pixels[:10, :10] = EXIF_CORNER
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return _jpeg(Image.fromarray(pixels), exif=exif.tobytes())


def _png_with_alpha() -> bytes:
    pixels = np.zeros((40, 40, 4), np.uint8)
    pixels[:, :20] = PNG_OPAQUE + (255,)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # RGBA; right half fully transparent
    return buffer.getvalue()


def _truncated_jpeg() -> bytes:
    noise = np.random.default_rng(16).integers(0, 256, size=(80, 80, 3), dtype=np.uint8)
    data = _jpeg(Image.fromarray(noise))
    return data[: len(data) // 2]  # header intact, scan data cut: opens, fails to load


def _train_images(with_bad_cases: bool) -> tuple[dict, dict]:
    """{id: bytes or None (listed but missing)}, {id: original size} of train."""
    files = {i: _jpeg(_picture(i, size)) for i, size in GOOD_TRAIN_SIZES.items()}
    sizes = dict(GOOD_TRAIN_SIZES)
    if not with_bad_cases:
        return files, sizes
    gradient = np.tile(np.linspace(0, 255, 64, dtype=np.float32), (48, 1)).astype(np.uint8)
    files[CASES["gray"]] = _jpeg(Image.fromarray(gradient))  # mode L
    files[CASES["cmyk"]] = _jpeg(Image.new("RGB", (48, 64), CMYK_RGB).convert("CMYK"))
    files[CASES["png_as_jpg"]] = _png_with_alpha()
    files[CASES["exif_rotated"]] = _exif_rotated_jpeg()
    files[CASES["tiny"]] = _jpeg(_picture(13, (3, 2)))
    files[CASES["extreme_aspect"]] = _jpeg(_picture(14, (400, 4)))
    files[CASES["empty"]] = b""
    files[CASES["truncated"]] = _truncated_jpeg()
    files[CASES["not_image"]] = b"this is a text file, not an image\n"
    files[CASES["missing"]] = None
    files[CASES["no_captions"]] = _jpeg(_picture(19, (40, 40)))
    files[CASES["only_blank_captions"]] = _jpeg(_picture(20, (40, 40)))
    sizes.update({9: (64, 48), 10: (48, 64), 11: (40, 40), 12: EXIF_STORED_SIZE[::-1], 13: (3, 2), 14: (400, 4)})
    return files, sizes


def _write_split(root: str, split: str, files: dict, annotations: list) -> None:
    folder = os.path.join(root, f"{split}2014")
    os.makedirs(folder, exist_ok=True)
    images = []
    for image_id in sorted(files):
        name = coco_file_name(split, image_id)
        images.append({"id": image_id, "file_name": name, "license": 1, "coco_url": "", "date_captured": ""})
        if files[image_id] is not None:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(files[image_id])
    data = {
        "info": {"description": "textgan test fixture (COCO 2014 captions layout)", "year": 2014},
        "licenses": [{"id": 1, "name": "test"}],
        "images": images,
        "annotations": [
            {"id": n, "image_id": image_id, "caption": caption} for n, (image_id, caption) in enumerate(annotations, 1)
        ],
    }
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", f"captions_{split}2014.json"), "w") as f:
        json.dump(data, f)


def _expectations(split, files, sizes, captions, skip_reading, skip_image, dropped) -> dict:
    skip = {**skip_reading, **skip_image}
    return {
        "good_ids": sorted(i for i in files if i not in skip),
        "skip": dict(sorted(skip.items())),
        "skip_reading": skip_reading,
        "skip_image": skip_image,
        "captions": {i: c for i, c in sorted(captions.items()) if c},
        "sizes": {i: tuple(s) for i, s in sorted(sizes.items()) if i not in skip},
        "file_names": {i: coco_file_name(split, i) for i in sorted(files)},
        "captions_dropped": sum(dropped.values()),
        "captions_dropped_by_reason": dict(sorted(dropped.items())),
    }


def make_coco_fixture(root, *, with_bad_cases: bool = True) -> dict:
    """Write the fixture tree into `root` (created if needed) and return its expectations."""
    root = os.path.abspath(os.fspath(root))
    os.makedirs(root, exist_ok=True)

    # ---- train
    files, sizes = _train_images(with_bad_cases)
    captions = {i: _captions(i) for i in files}
    annotations = [(i, c) for i in sorted(files) for c in captions[i]]
    skip_reading, skip_image, dropped = {}, {}, {}
    if with_bad_cases:
        c = CASES
        captions[c["no_captions"]] = []
        captions[c["only_blank_captions"]] = []
        captions[c["multiline_caption"]] = [MULTILINE_NORMALIZED] + captions[c["multiline_caption"]][1:]
        annotations = [(i, t) for i, t in annotations if i not in (c["no_captions"], c["only_blank_captions"])]
        first_of_2 = next(n for n, (i, _) in enumerate(annotations) if i == c["multiline_caption"])
        annotations[first_of_2] = (c["multiline_caption"], MULTILINE_RAW)
        annotations += [
            (c["blank_caption"], "   \n\t "),
            (c["only_blank_captions"], ""),
            (c["only_blank_captions"], " \n "),
            (c["duplicate_caption"], "  " + captions[c["duplicate_caption"]][0].replace(" ", "   ") + "\n"),
            (c["unknown_caption_id"], "A caption for an image that is not listed."),
        ]
        skip_reading = {c["no_captions"]: "no captions", c["only_blank_captions"]: "no captions"}
        skip_image = {
            c["empty"]: "empty file",
            c["truncated"]: "truncated image",
            c["not_image"]: "not an image",
            c["missing"]: "file missing",
        }
        dropped = {"duplicate caption": 1, "unknown image id": 1, "whitespace-only caption": 3}
    _write_split(root, "train", files, annotations)
    train = _expectations("train", files, sizes, captions, skip_reading, skip_image, dropped)
    train_files = files

    # ---- val
    files = {i: _jpeg(_picture(i, size)) for i, size in GOOD_VAL_SIZES.items()}
    sizes = dict(GOOD_VAL_SIZES)
    captions = {i: _captions(i) for i in files}
    skip_image, dropped = {}, {}
    if with_bad_cases:
        c = CASES
        files[c["val_same_bytes"]] = train_files[1]
        sizes[c["val_same_bytes"]] = GOOD_TRAIN_SIZES[1]
        files[c["val_same_id"]] = _jpeg(_picture(1005, (56, 70)))
        sizes[c["val_same_id"]] = (56, 70)
        files[c["val_missing"]] = None
        files[c["val_empty"]] = b""  # same (zero) size as train's empty file: must not count as a byte duplicate
        for i in (c["val_same_bytes"], c["val_same_id"], c["val_missing"], c["val_empty"]):
            captions[i] = _captions(i)
        skip_image = {c["val_missing"]: "file missing", c["val_empty"]: "empty file"}
        dropped = {"whitespace-only caption": 1}
    annotations = [(i, t) for i in sorted(files) for t in captions[i]]
    if with_bad_cases:
        annotations.append((101, "\n"))
    _write_split(root, "val", files, annotations)
    val = _expectations("val", files, sizes, captions, {}, skip_image, dropped)

    if with_bad_cases:
        overlap = {"ids": [CASES["val_same_id"]], "bytes": [CASES["val_same_bytes"]]}
        overlap_train = {"ids": [CASES["val_same_id"]], "bytes": [1]}
    else:
        overlap = overlap_train = {"ids": [], "bytes": []}
    return {
        "root": root,
        "train": train,
        "val": val,
        "overlap": overlap,
        "overlap_train": overlap_train,
        "cases": dict(CASES) if with_bad_cases else {},
    }

