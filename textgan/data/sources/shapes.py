"""Captioned shapes: procedurally generated pictures of simple shapes with captions from their attributes.

The demo and test data of textgan. A scene is a pure function of (index, seed, split); it holds
the ground truth (shapes, colours, sizes, positions, relation, background) that the
`shapes_alignment` evaluator (textgan.metrics.alignment) checks a generated picture against.

Design choices the evaluator relies on:
- Palette colours are saturated and spread around the hue circle (>= 30 degrees apart in the
  opponent colour plane that the evaluator uses); backgrounds are near-grey (tint chroma <= 14
  of ~120-190 for the palette) with a grey-only gradient and grain, so "coloured" means "object".
- (cx, cy) is the area centroid of every shape (the triangle is equilateral about its
  circumcentre), so the centroid the evaluator measures is the position stored here, and each
  one-object centroid sits >= 0.07 of the side inside its 3x3 cell.
- Two objects never overlap, and the axis of their relation dominates: the main-axis gap is
  >= 0.3 and at least twice the cross-axis offset.
Pure numpy/PIL: the shard builder's worker processes render scenes without torch.
"""

import json
import math
import os

import numpy as np
from PIL import Image, ImageDraw

from textgan.atomic import write_bytes_atomic
from textgan.data.records import Record
from textgan.data.sources.shapes_captions import POSITIONS, RELATIONS, SIZES, scene_captions

__all__ = ["PALETTE", "SHAPES", "SIZES", "POSITIONS", "RELATIONS", "make_scene", "render_scene",
           "shapes_records", "write_coco_layout", "shape_polygon", "shape_extent"]

PALETTE = {
    "red": (225, 25, 35),
    "orange": (250, 120, 0),
    "yellow": (230, 225, 0),
    "green": (20, 175, 30),
    "cyan": (0, 190, 210),
    "blue": (35, 75, 235),
    "purple": (150, 35, 220),
    "pink": (240, 40, 150),
}
SHAPES = ("circle", "square", "triangle", "diamond")
# Nominal radius as a fraction of the image side; small stays >= 6 px across at 32 px.
RADIUS_RANGE = {"small": (0.095, 0.11), "large": (0.15, 0.17)}

SPLIT_CODES = {"train": 0, "val": 1}
VAL_ID_OFFSET = 1_000_000
SUPERSAMPLE = 4  # objects are drawn at 4x and box-downsampled: exact area coverage at the edges

CELL_MARGIN = 0.07  # one object's centroid keeps this far from its cell's borders
EDGE_MARGIN = 0.015  # objects keep this far from the image border
GAP = 0.03  # minimum empty space between two objects' bounding boxes
# Per-shape size relative to the nominal radius r, chosen so all four shapes have similar area
# (circle 3.14 r^2, square 3.24, triangle 2.37, diamond 3.13).
SQUARE_HALF_SIDE = 0.9
TRIANGLE_CIRCUMRADIUS = 1.35
DIAMOND_HALF_DIAGONAL = 1.25


def shape_polygon(shape: str, cx: float, cy: float, r: float):
    """Vertices [(x, y), ...] of a polygonal shape, or None for the circle (radius r).

    Same units as the arguments (fractions of the side, or pixels); y grows downwards.
    Every shape's area centroid is (cx, cy)."""
    if shape == "circle":
        return None
    if shape == "square":
        h = SQUARE_HALF_SIDE * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":  # apex up, equilateral: centroid == circumcentre
        R = TRIANGLE_CIRCUMRADIUS * r
        return [(cx, cy - R), (cx + R * math.sqrt(3) / 2, cy + R / 2), (cx - R * math.sqrt(3) / 2, cy + R / 2)]
    if shape == "diamond":
        d = DIAMOND_HALF_DIAGONAL * r
        return [(cx, cy - d), (cx + d, cy), (cx, cy + d), (cx - d, cy)]
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def shape_extent(shape: str, r: float) -> tuple:
    """(left, right, up, down): how far the shape reaches from its centroid."""
    if shape == "circle":
        return (r, r, r, r)
    xs, ys = zip(*shape_polygon(shape, 0.0, 0.0, r))
    return (-min(xs), max(xs), -min(ys), max(ys))


def _check_key(index, seed, split):
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {tuple(SPLIT_CODES)}, got {split!r}")
    for name, value in (("index", index), ("seed", seed)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _centre_range(lo_extent, hi_extent, cell=None):
    """Interval of centroid coordinates that keeps the shape inside the image (and its
    centroid CELL_MARGIN inside grid cell `cell` when given)."""
    lo, hi = lo_extent + EDGE_MARGIN, 1.0 - hi_extent - EDGE_MARGIN
    if cell is not None:
        lo, hi = max(lo, cell / 3 + CELL_MARGIN), min(hi, (cell + 1) / 3 - CELL_MARGIN)
    assert lo <= hi, "shape too large for its cell"  # holds for RADIUS_RANGE; guards edits
    return lo, hi


def _draw_object(rng, color: str):
    shape = SHAPES[rng.integers(len(SHAPES))]
    size = SIZES[rng.integers(len(SIZES))]
    r = float(rng.uniform(*RADIUS_RANGE[size]))
    return {"shape": shape, "color": color, "size": size, "r": round(r, 4)}


def _place_one(rng, obj):
    left, right, up, down = shape_extent(obj["shape"], obj["r"])
    cell = int(rng.integers(9))
    row, col = divmod(cell, 3)
    obj["position"] = POSITIONS[cell]
    obj["cx"] = round(float(rng.uniform(*_centre_range(left, right, col))), 4)
    obj["cy"] = round(float(rng.uniform(*_centre_range(up, down, row))), 4)


def _boxes_apart(a, b) -> bool:
    la, ra, ua, da = shape_extent(a["shape"], a["r"])
    lb, rb, ub, db = shape_extent(b["shape"], b["r"])
    apart_x = a["cx"] + ra + GAP <= b["cx"] - lb or b["cx"] + rb + GAP <= a["cx"] - la
    apart_y = a["cy"] + da + GAP <= b["cy"] - ub or b["cy"] + db + GAP <= a["cy"] - ua
    return apart_x or apart_y


def _place_two(rng, first, second, relation):
    """Rejection-sample centroids until `first relation second` is unmistakable."""
    for _ in range(10_000):
        for obj in (first, second):
            left, right, up, down = shape_extent(obj["shape"], obj["r"])
            obj["cx"] = round(float(rng.uniform(*_centre_range(left, right))), 4)
            obj["cy"] = round(float(rng.uniform(*_centre_range(up, down))), 4)
        dx, dy = second["cx"] - first["cx"], second["cy"] - first["cy"]
        main, cross = {"to the left of": (dx, dy), "to the right of": (-dx, dy),
                       "above": (dy, dx), "below": (-dy, dx)}[relation]
        if main >= 0.3 and abs(cross) <= 0.5 * main and _boxes_apart(first, second):
            return
    raise RuntimeError("could not place two objects; RADIUS_RANGE is too large for the relation rules")


def _background(rng) -> dict:
    """Near-grey: lightness 35-220 plus a faint tint (opponent chroma <= 14), a grey gradient and grain."""
    lightness = rng.uniform(35, 220)
    angle, chroma = rng.uniform(0, 2 * math.pi), rng.uniform(0, 14)
    c1, c2 = chroma * math.cos(angle), chroma * math.sin(angle)
    # Inverse of the opponent basis c1 = (R - G)/sqrt2, c2 = (R + G - 2B)/sqrt6 used by the evaluator.
    tint = (c1 / math.sqrt(2) + c2 / math.sqrt(6), -c1 / math.sqrt(2) + c2 / math.sqrt(6), -2 * c2 / math.sqrt(6))
    return {
        "background": [int(np.clip(round(lightness + t), 0, 255)) for t in tint],
        "background_gradient": [round(float(g), 2) for g in rng.uniform(-20, 20, size=2)],
        "background_noise": round(float(rng.uniform(0, 4)), 2),
        "noise_seed": int(rng.integers(2**31)),
    }


def make_scene(index: int, seed: int = 0, split: str = "train") -> dict:
    """The scene number `index` of (seed, split): JSON-serialisable ground truth and 5 captions.

    {"objects": [{"shape", "color", "size", "position" (None with two objects), "cx", "cy", "r"}],
     "relation": None | "objects[0] <relation> objects[1]", "background": [r, g, b],
     "background_gradient": [gx, gy], "background_noise": sigma, "noise_seed": int,
     "captions": [5 distinct strings]}; coordinates are fractions of the image side."""
    _check_key(index, seed, split)
    rng = np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])
    colors = list(PALETTE)
    if rng.random() < 0.5:
        obj = _draw_object(rng, colors[rng.integers(len(colors))])
        _place_one(rng, obj)
        objects, relation = [obj], None
    else:
        i, j = rng.choice(len(colors), size=2, replace=False)  # two different colours
        objects = [_draw_object(rng, colors[i]), _draw_object(rng, colors[j])]
        relation = RELATIONS[rng.integers(len(RELATIONS))]
        _place_two(rng, objects[0], objects[1], relation)
        for obj in objects:
            obj["position"] = None
    objects = [{k: o[k] for k in ("shape", "color", "size", "position", "cx", "cy", "r")} for o in objects]
    scene = {"objects": objects, "relation": relation, **_background(rng)}
    scene["captions"] = scene_captions(objects, relation, rng)
    return scene


def _coverage(obj: dict, size: int) -> np.ndarray:
    """Float [size, size] fraction of each pixel covered by the object (drawn at 4x, box-averaged)."""
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    # PIL addresses pixel centres; a continuous coordinate u maps to pixel-centre space as u - 0.5.
    cx, cy, r = obj["cx"] * big - 0.5, obj["cy"] * big - 0.5, obj["r"] * big
    polygon = shape_polygon(obj["shape"], cx, cy, r)
    if polygon is None:
        draw.ellipse([cx - r + 0.5, cy - r + 0.5, cx + r - 0.5, cy + r - 0.5], fill=255)
    else:
        draw.polygon(polygon, fill=255)
    return np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0


def render_scene(scene: dict, size: int) -> Image.Image:
    """The scene as an RGB PIL image of size x size (any size >= 8; 32 is the demo resolution)."""
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"render size must be an integer >= 8, got {size!r}")
    t = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    gx, gy = scene.get("background_gradient", (0.0, 0.0))
    shade = gx * t[None, :] + gy * t[:, None]  # grey gradient: changes lightness, never hue
    img = np.asarray(scene["background"], np.float32)[None, None, :] + shade[:, :, None]
    for obj in scene["objects"]:
        alpha = _coverage(obj, int(size))[:, :, None]
        img = img * (1 - alpha) + np.asarray(PALETTE[obj["color"]], np.float32) * alpha
    sigma = scene.get("background_noise", 0.0)
    if sigma:  # grey grain (same value on all channels), reproducible per scene and size
        grain = np.random.default_rng([scene.get("noise_seed", 0), int(size)]).normal(0, sigma, (size, size))
        img = img + grain[:, :, None].astype(np.float32)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def image_id_of(index: int, split: str) -> int:
    return index if split == "train" else VAL_ID_OFFSET + index


def coco_file_name(split: str, image_id: int) -> str:
    return f"COCO_{split}2014_{image_id:012d}.jpg"


def shapes_records(n: int, seed: int = 0, split: str = "train") -> list:
    """Records for scenes 0..n-1 of (seed, split); cheap (no rendering): attributes = the scene."""
    _check_key(0, seed, split)
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    records = []
    for index in range(n):
        scene = make_scene(index, seed, split)
        image_id = image_id_of(index, split)
        records.append(Record(image_id=image_id, file_name=coco_file_name(split, image_id),
                              captions=list(scene["captions"]), split=split, path=None, attributes=scene))
    return records


def write_coco_layout(root: str, n: int, seed: int = 0, split: str = "train", size: int = 64,
                      quality: int = 95) -> None:
    """Write scenes 0..n-1 as a COCO-2014-style folder (the layout the COCO reader expects):
    root/annotations/captions_{split}2014.json and root/{split}2014/COCO_{split}2014_{id:012d}.jpg.
    Other splits already in `root` are left alone."""
    records = shapes_records(n, seed, split)
    image_dir = os.path.join(root, f"{split}2014")
    annotation_dir = os.path.join(root, "annotations")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(annotation_dir, exist_ok=True)
    images, annotations = [], []
    for record in records:
        # 4:4:4 chroma: 4:2:0 would halve the colour resolution of objects a few pixels wide.
        render_scene(record.attributes, size).save(
            os.path.join(image_dir, record.file_name), format="JPEG", quality=quality, subsampling=0)
        images.append({"id": record.image_id, "file_name": record.file_name, "width": size, "height": size})
        for k, caption in enumerate(record.captions):
            # Unique across splits (val ids start at 1_000_000), like COCO's global annotation ids.
            annotations.append({"id": record.image_id * 10 + k, "image_id": record.image_id, "caption": caption})
    coco = {
        "info": {"description": f"textgan captioned shapes ({split}, seed {seed}, {n} images, {size} px)",
                 "version": "1.0", "year": 2014},
        "images": images,
        "licenses": [],
        "annotations": annotations,
    }
    path = os.path.join(annotation_dir, f"captions_{split}2014.json")
    write_bytes_atomic(path, json.dumps(coco).encode("utf-8"))
