"""`shapes_alignment`: does a picture show what its captioned-shapes caption says? Judged from pixels alone.

How a picture is read:
1. Colour plane. Each pixel goes to the opponent plane c1 = (R - G)/sqrt2, c2 = (R + G - 2B)/sqrt6,
   where any grey is the origin and mixing a colour with grey scales its vector without turning
   it. The image's median vector (the background tint; the background covers most of the picture)
   is subtracted, so an object's antialiased edge pixel d = alpha * (palette - background).
2. Colour maps. A pixel whose vector is longer than CHROMA_THRESHOLD (far more than any
   background tint, grain or JPEG error) and within MAX_HUE_ERROR degrees of a palette colour
   belongs to that colour with weight alpha (its projection, clipped to [0, 1]).
3. Criteria.
   colour:   the caption's colour is the colour with the most weight (two objects: its two colours
             are the two heaviest). Random pictures spread weight over all hues, so they pass with
             the chance of naming the right colour (~1/8 for one object, ~1/28 for two).
   position: the weighted centroid of the caption's colour falls in the captioned 3x3 cell.
   relation: the centroids of the two colours differ mostly along the relation's axis, in its
             direction.
   shape:    each shape template (same geometry as the renderer) is placed at the colour's
             centroid with the size its weight implies, optionally blurred (JPEG chroma
             subsampling, GAN softness); the template that best explains the weights in
             least squares must be the captioned shape.
Pictures larger than WORK_SIZE are box-downsampled first (cheap; a small shape stays ~12 px across).
"""

import math

import numpy as np
from PIL import Image

from textgan.data.sources.shapes import PALETTE, POSITIONS, SHAPES, shape_polygon
from textgan.data.sources.shapes_captions import caption_parser

CHROMA_THRESHOLD = 35.0  # palette colours sit 120-190 from grey; backgrounds <= 14 (+ grain, JPEG)
MAX_HUE_ERROR = 30.0  # degrees; palette hues are >= 30 apart, so this only rejects off-palette hues
MIN_AREA_FRACTION = 0.004  # a colour "is in the picture" when it covers >= 0.4% of it (~4 px at 32 px)
WORK_SIZE = 64

_OPPONENT = np.array([[1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
                      [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)]], dtype=np.float32)
_COLOR_NAMES = tuple(PALETTE)
_PALETTE_OPPONENT = np.asarray([PALETTE[c] for c in _COLOR_NAMES], np.float32) @ _OPPONENT.T  # [K, 2]

_parse = caption_parser(_COLOR_NAMES, SHAPES)


def parse_caption(caption: str) -> dict:
    """Caption -> {"objects": [{"shape", "color", "size", "position" (None with two objects)}],
    "relation": None | how objects[0] lies relative to objects[1]}.

    Accepts every generated template plus small variations (case, final full stop, "at"/"in",
    "corner", "middle", "beneath"...). ValueError, quoting the caption, for anything else."""
    return _parse(caption)


def _working_pixels(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"score_image wants a uint8 [H, W, 3] RGB array, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < 16:
        raise ValueError(f"images must be at least 16 px on each side, got {image.shape[1]}x{image.shape[0]}")
    h, w = image.shape[:2]
    if max(h, w) > WORK_SIZE:
        scale = WORK_SIZE / max(h, w)
        size = (max(16, round(w * scale)), max(16, round(h * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    return image.astype(np.float32)


class ColorMaps:
    """Per-palette-colour weight maps of one picture (see the module docstring, steps 1-2)."""

    def __init__(self, image):
        pixels = _working_pixels(image)
        self.height, self.width = pixels.shape[:2]
        opponent = pixels @ _OPPONENT.T  # [H, W, 2]
        background = np.median(opponent.reshape(-1, 2), axis=0)
        d = opponent - background
        reference = _PALETTE_OPPONENT - background  # [K, 2]: palette colour seen against this background
        self.reference_length = np.linalg.norm(reference, axis=1)
        unit = reference / self.reference_length[:, None]
        length = np.linalg.norm(d, axis=2)
        along = d @ unit.T  # [H, W, K]
        cosine = along / np.maximum(length, 1e-6)[..., None]
        nearest = np.argmax(cosine, axis=2)
        best_cosine = np.take_along_axis(cosine, nearest[..., None], axis=2)[..., 0]
        colored = (length >= CHROMA_THRESHOLD) & (best_cosine >= math.cos(math.radians(MAX_HUE_ERROR)))
        alpha = np.clip(np.take_along_axis(along, nearest[..., None], axis=2)[..., 0]
                        / self.reference_length[nearest], 0.0, 1.0)
        self.maps = np.zeros((len(_COLOR_NAMES),) + length.shape, np.float32)
        rows, cols = np.nonzero(colored)
        self.maps[nearest[rows, cols], rows, cols] = alpha[rows, cols]
        self.mass = self.maps.sum(axis=(1, 2))
        self.min_mass = MIN_AREA_FRACTION * self.height * self.width

    def index(self, color: str) -> int:
        return _COLOR_NAMES.index(color)

    def present(self, color: str) -> bool:
        return bool(self.mass[self.index(color)] >= self.min_mass)

    def dominant(self, count: int) -> set:
        """The `count` heaviest colours among those present."""
        order = [k for k in np.argsort(-self.mass, kind="stable") if self.mass[k] >= self.min_mass]
        return {_COLOR_NAMES[k] for k in order[:count]}

    def centroid(self, color: str) -> tuple:
        """Weighted centroid (x, y) as fractions of width and height."""
        weights = self.maps[self.index(color)]
        ys, xs = np.mgrid[0:self.height, 0:self.width]
        total = weights.sum()
        return (float((weights * (xs + 0.5)).sum() / total / self.width),
                float((weights * (ys + 0.5)).sum() / total / self.height))

    def threshold(self, color: str) -> float:
        """Smallest weight a pixel of this colour can have (below it the pixel counts as background)."""
        return float(CHROMA_THRESHOLD / self.reference_length[self.index(color)])


def position_of(x: float, y: float) -> str:
    col, row = min(int(3 * x), 2), min(int(3 * y), 2)
    return POSITIONS[3 * row + col]


def relation_of(first: tuple, second: tuple) -> str:
    """How `first` lies relative to `second`, judged along the axis where they differ most."""
    dx, dy = second[0] - first[0], second[1] - first[1]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


# ---- shape: least-squares fit of the renderer's templates -------------------------------------

_SUBSAMPLES = 4


def _area(shape: str) -> float:
    """Area of a shape of nominal radius 1 (shoelace formula on the renderer's polygon)."""
    polygon = shape_polygon(shape, 0.0, 0.0, 1.0)
    if polygon is None:
        return math.pi
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1])))


_AREA = {shape: _area(shape) for shape in SHAPES}
_SCALES = (0.95, 1.0, 1.05, 1.1)  # thresholding trims faint edge pixels, so weights underestimate area
_BLURS = (None, np.array([1, 2, 1], np.float32) / 4, np.array([1, 4, 6, 4, 1], np.float32) / 16)


def _template(shape, cx, cy, r, xs, ys) -> np.ndarray:
    """Fraction of each pixel of the grid (pixel-centre coordinates xs, ys) covered by the shape."""
    offsets = (np.arange(_SUBSAMPLES, dtype=np.float32) + 0.5) / _SUBSAMPLES - 0.5
    px = (xs[None, :, None, None] + offsets[None, None, None, :])  # [1, W, 1, S]
    py = (ys[:, None, None, None] + offsets[None, None, :, None])  # [H, 1, S, 1]
    polygon = shape_polygon(shape, cx, cy, r)
    if polygon is None:
        inside = (px - cx) ** 2 + (py - cy) ** 2 <= r * r
    else:
        crosses = [(x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
                   for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1])]
        inside = np.logical_and.reduce([c >= 0 for c in crosses]) | np.logical_and.reduce([c <= 0 for c in crosses])
    return inside.mean(axis=(2, 3), dtype=np.float32)


def _blur(image, kernel):
    """Separable blur; zero outside the crop (the crop's border is background anyway)."""
    if kernel is None:
        return image
    out = np.pad(image, len(kernel) // 2)
    rows = sum(k * out[i:i + image.shape[0], :] for i, k in enumerate(kernel))
    return sum(k * rows[:, i:i + image.shape[1]] for i, k in enumerate(kernel))


def fit_shape(maps: ColorMaps, color: str) -> str:
    """The shape whose template best explains the weight map of `color` (least squares)."""
    weights = maps.maps[maps.index(color)]
    mass = float(weights.sum())
    x, y = maps.centroid(color)
    cx, cy = x * maps.width, y * maps.height
    floor = maps.threshold(color)
    reach = 1.6 * math.sqrt(mass / min(_AREA.values())) * max(_SCALES) + 3  # covers every candidate
    x0, x1 = max(0, int(cx - reach)), min(maps.width, int(math.ceil(cx + reach)))
    y0, y1 = max(0, int(cy - reach)), min(maps.height, int(math.ceil(cy + reach)))
    observed = weights[y0:y1, x0:x1]
    xs = np.arange(x0, x1, dtype=np.float32) + 0.5
    ys = np.arange(y0, y1, dtype=np.float32) + 0.5
    best, best_error = None, math.inf
    for shape in SHAPES:
        r0 = math.sqrt(mass / _AREA[shape])
        for scale in _SCALES:
            coverage = _template(shape, cx, cy, r0 * scale, xs, ys)
            for kernel in _BLURS:
                model = _blur(coverage, kernel)
                model = np.where(model >= floor, model, 0.0)  # faint pixels were dropped from `observed` too
                error = float(((observed - model) ** 2).sum())
                if error < best_error:
                    best, best_error = shape, error
    return best


# ---- scoring ------------------------------------------------------------------------------------

def score_image(image, caption: str) -> dict:
    """How one picture (uint8 [H, W, 3], H, W >= 16) matches its caption, criterion by criterion:
    {"color": bool, "position": bool | None (one object), "relation": bool | None (two objects),
     "shape": bool}. ValueError if the caption is not a captioned-shapes caption."""
    parsed = parse_caption(caption)
    maps = ColorMaps(image)
    objects = parsed["objects"]
    colors = [o["color"] for o in objects]
    present = all(maps.present(c) for c in colors)
    result = {"color": maps.dominant(len(colors)) == set(colors), "position": None, "relation": None}
    if parsed["relation"] is None:
        result["position"] = present and position_of(*maps.centroid(colors[0])) == objects[0]["position"]
    else:
        result["relation"] = present and (
            relation_of(maps.centroid(colors[0]), maps.centroid(colors[1])) == parsed["relation"])
    result["shape"] = present and all(fit_shape(maps, o["color"]) == o["shape"] for o in objects)
    return result


def _as_uint8_images(images) -> np.ndarray:
    """uint8 numpy [N, H, W, 3], or a float tensor [N, 3, H, W] in [-1, 1] (G's output) -> uint8 [N, H, W, 3]."""
    if hasattr(images, "detach"):  # a torch tensor; torch itself is not imported here
        tensor = images.detach().cpu()
        if tensor.ndim != 4 or tensor.shape[1] != 3 or not tensor.is_floating_point():
            raise ValueError(f"a tensor of images must be float [N, 3, H, W] in [-1, 1], got "
                             f"{tensor.dtype} {tuple(tensor.shape)}")
        array = tensor.float().numpy().transpose(0, 2, 3, 1)
        return np.clip(np.rint((array + 1.0) * 127.5), 0, 255).astype(np.uint8)
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] != 3:
        raise ValueError(f"images must be uint8 numpy [N, H, W, 3] or a float tensor [N, 3, H, W] in "
                         f"[-1, 1], got {array.dtype} {array.shape}")
    return array


def shapes_alignment(images, captions) -> dict:
    """Accuracy of each criterion over the pictures where it applies (None where it applies to
    none), "overall" = mean of the available accuracies, "n" = number of pictures.
    images: uint8 [N, H, W, 3] or float tensor [N, 3, H, W] in [-1, 1]; captions: N strings."""
    pixels = _as_uint8_images(images)
    captions = list(captions)
    if len(captions) != len(pixels):
        raise ValueError(f"got {len(pixels)} images but {len(captions)} captions; pass one caption per image")
    return combine_scores([score_image(image, caption) for image, caption in zip(pixels, captions)])


def _accuracies(scores: list, criteria) -> dict:
    result = {}
    for criterion in criteria:
        values = [s[criterion] for s in scores if s[criterion] is not None]
        result[criterion] = float(np.mean(values)) if values else None
    return result


def combine_scores(scores: list) -> dict:
    """score_image results of many pictures -> the shapes_alignment summary (see shapes_alignment).

    Besides the headline accuracies, "one_object" and "two_objects" give colour and shape (and position,
    resp. relation) over each kind of caption with its count "n": the two kinds are about half each and
    far apart in difficulty (two colours must both be right, chance ~1/28 against ~1/8), so the headline
    colour alone cannot tell a model that fails two-object captions from one that is mediocre on both."""
    result = _accuracies(scores, ("color", "position", "relation", "shape"))
    available = [v for v in result.values() if v is not None]
    result["overall"] = float(np.mean(available)) if available else None
    result["n"] = len(scores)
    one = [s for s in scores if s["relation"] is None]  # score_image sets relation only for two objects
    two = [s for s in scores if s["relation"] is not None]
    result["one_object"] = {**_accuracies(one, ("color", "position", "shape")), "n": len(one)}
    result["two_objects"] = {**_accuracies(two, ("color", "relation", "shape")), "n": len(two)}
    return result
