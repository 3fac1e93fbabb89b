"""The textgan shard format: the one place that names files, keys and manifest fields.

A shard directory OUT holds WebDataset tars plus OUT/manifest.json (written last).

Each sample in a tar:
    __key__            f"{image_id:012d}"
    jpg                RGB JPEG at the build resolution (square)
    txt                the first caption (UTF-8): open_clip's trainer and img2dataset's tools read it
    json               {"image_id": int, "file_name": str, "captions": [str, ...],
                        "width": int, "height": int,   # of the original image
                        "split": "train" | "val",
                        "attributes": {...}}            # shapes data only: ground truth
    clip_img.npy       optional float16 [D]: CLIP image embedding of the stored JPEG
    clip_txt.npy       optional float16 [n_captions, D]: CLIP text embedding per caption
    perceptual.npy     optional float16 [F]: ResNet/VGG pooled features of the stored JPEG

Shards written by other tools (img2dataset: jpg/png/webp + txt + json) get a manifest from
`textgan shards index` (textgan/data/building/index.py): source "img2dataset", sha256 null, settings
{resolution, resize_on_load: "center", image_key, ...}; their samples' captions come from txt and their
ids from their keys.

manifest.json (see MANIFEST_* below and textgan.data.manifest):
    format, format_version, builder_version, source ("coco" | "shapes" | "img2dataset"), split,
    settings   {resolution, crop, quality, seed, limit, samples_per_shard, exclude_overlap,
                features: {clip: {...} | null, perceptual: {...} | null}, source-specific keys},
    annotations_sha256, shards [{name, samples, sha256}], samples,
    skipped [{image_id, file_name, reason}], captions_dropped, captions_dropped_by_reason,
    overlap {checked_against, ids, bytes, excluded}
"""

FORMAT_NAME = "textgan-shards"
FORMAT_VERSION = 1

MANIFEST_NAME = "manifest.json"
# A build split into K parts writes one of these per part; `merge` combines them.
PART_MANIFEST_PATTERN = "manifest.part-{part:03d}-of-{num_parts:03d}.json"
# Per-shard record written (atomically) just before the shard itself is renamed into
# place; a finished shard is a tar whose record exists. Resume reads these.
SHARD_RECORD_SUFFIX = ".record.json"
TMP_SUFFIX = ".tmp"

KEY_JPG = "jpg"
KEY_JSON = "json"
KEY_TXT = "txt"  # the first caption, as plain text: what open_clip's and img2dataset's tools read
KEY_CLIP_IMG = "clip_img.npy"
KEY_CLIP_TXT = "clip_txt.npy"
KEY_PERCEPTUAL = "perceptual.npy"
FEATURE_KEYS = (KEY_CLIP_IMG, KEY_CLIP_TXT, KEY_PERCEPTUAL)

SPLITS = ("train", "val")
CROP_MODES = ("center", "pad")


def sample_key(image_id: int) -> str:
    """WebDataset key of an image: zero-padded so that keys sort like ids."""
    return f"{int(image_id):012d}"


def shard_name(split: str, index: int, part: int = 0, num_parts: int = 1) -> str:
    """File name of shard `index` of part `part`: unsplit builds get `train-000000.tar`,
    split builds `train-p003-000000.tar` so parts never collide in one directory."""
    if num_parts == 1:
        return f"{split}-{index:06d}.tar"
    return f"{split}-p{part:03d}-{index:06d}.tar"
