"""The captioned-shapes generator: deterministic scenes, sound ground truth, captions that parse back,
pictures that show the scene, and a COCO-2014-style export."""

import collections
import json
import os

import numpy as np
import pytest
from PIL import Image

from textgan.metrics.alignment import parse_caption
from textgan.data.sources.shapes import (
    PALETTE, POSITIONS, RELATIONS, SHAPES, SIZES, make_scene, render_scene, shape_extent, shapes_records,
    write_coco_layout,
)
from textgan.data.sources.shapes_captions import INVERSE_RELATION, ONE_OBJECT_TEMPLATES, TWO_OBJECT_TEMPLATES

N_STATS = 400


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(i, seed=3) for i in range(N_STATS)]


def layout(objects, relation):
    """A two-object layout written either way round ("A left of B" == "B right of A") -> one key."""
    strip = [tuple(o[k] for k in ("shape", "color", "size", "position")) for o in objects]
    if relation in ("to the right of", "below"):
        return (strip[1], strip[0], INVERSE_RELATION[relation])
    return (*strip, relation)


def test_same_arguments_give_the_same_scene_and_pixels_and_any_change_gives_another():
    assert make_scene(5, seed=1, split="val") == make_scene(5, seed=1, split="val")
    a = render_scene(make_scene(5, seed=1, split="val"), 32).tobytes()
    assert a == render_scene(make_scene(5, seed=1, split="val"), 32).tobytes()
    base = make_scene(5, seed=1, split="train")
    for other in (make_scene(5, seed=1, split="val"), make_scene(5, seed=2), make_scene(6, seed=1)):
        assert other != base
        assert other["captions"] != base["captions"]


def test_scenes_are_json_and_hold_the_documented_fields(scenes):
    for scene in scenes[:50]:
        assert json.loads(json.dumps(scene)) == scene
        assert len(scene["background"]) == 3 and all(0 <= v <= 255 for v in scene["background"])
        assert len(scene["captions"]) == 5 and len(set(scene["captions"])) == 5
        for obj in scene["objects"]:
            assert set(obj) == {"shape", "color", "size", "position", "cx", "cy", "r"}


def test_attribute_statistics_cover_the_vocabulary(scenes):
    objects = [o for s in scenes for o in s["objects"]]
    assert {o["color"] for o in objects} == set(PALETTE)
    assert {o["shape"] for o in objects} == set(SHAPES)
    assert {o["size"] for o in objects} == set(SIZES)
    singles = [s for s in scenes if len(s["objects"]) == 1]
    assert {s["objects"][0]["position"] for s in singles} == set(POSITIONS)
    pairs = [s for s in scenes if len(s["objects"]) == 2]
    assert {s["relation"] for s in pairs} == set(RELATIONS)
    assert 0.4 <= len(pairs) / len(scenes) <= 0.6
    assert all(s["objects"][0]["color"] != s["objects"][1]["color"] for s in pairs)
    assert all(s["relation"] is None for s in singles)
    counts = collections.Counter(o["color"] for o in objects)
    assert min(counts.values()) >= 0.5 * len(objects) / len(PALETTE)  # roughly uniform


def test_geometry_matches_what_the_captions_claim(scenes):
    for scene in scenes:
        for obj in scene["objects"]:
            left, right, up, down = shape_extent(obj["shape"], obj["r"])
            assert obj["cx"] - left > 0 and obj["cx"] + right < 1 and obj["cy"] - up > 0 and obj["cy"] + down < 1
        if scene["relation"] is None:
            (obj,) = scene["objects"]
            col, row = int(3 * obj["cx"]), int(3 * obj["cy"])
            assert POSITIONS[3 * row + col] == obj["position"]
            # the centroid keeps clear of the cell borders, so a few pixels of error cannot move it
            assert min(abs(3 * obj["cx"] - round(3 * obj["cx"])), abs(3 * obj["cy"] - round(3 * obj["cy"]))) >= 0.2
        else:
            a, b = scene["objects"]
            dx, dy = b["cx"] - a["cx"], b["cy"] - a["cy"]
            main, cross = {"to the left of": (dx, dy), "to the right of": (-dx, dy),
                           "above": (dy, dx), "below": (-dy, dx)}[scene["relation"]]
            assert main >= 0.3 and abs(cross) <= 0.5 * main


def test_every_caption_of_every_template_parses_back_to_the_scene(scenes):
    singles = pairs = 0
    for scene in scenes:
        truth = layout([{**o} for o in scene["objects"]], scene["relation"])
        for caption in scene["captions"]:
            parsed = parse_caption(caption)
            assert layout(parsed["objects"], parsed["relation"]) == truth, caption
        singles += scene["relation"] is None
        pairs += scene["relation"] is not None
    # each scene carries one caption per template, so every template was checked many times
    assert len(ONE_OBJECT_TEMPLATES) == len(TWO_OBJECT_TEMPLATES) == 5 and singles > 100 and pairs > 100


def test_articles_agree_with_the_next_word():
    captions = [c for i in range(200) for c in make_scene(i)["captions"]]
    assert any(" an orange " in c or c.startswith("an orange") for c in captions)
    assert not any(" a orange" in c or c.startswith("a orange") for c in captions)


def test_rendered_pixels_show_each_object_in_its_colour_at_32_px(scenes):
    for scene in scenes[:60]:
        pixels = np.asarray(render_scene(scene, 32)).astype(int)
        assert pixels.shape == (32, 32, 3)
        for obj in scene["objects"]:
            # pixels within 12 levels of the palette colour: even a small object has a solid core
            exact = (np.abs(pixels - np.asarray(PALETTE[obj["color"]])).max(axis=2) <= 12).sum()
            assert exact >= (12 if obj["size"] == "small" else 30), (scene, exact)
        if not any(o["cx"] < 0.4 and o["cy"] < 0.4 for o in scene["objects"]):
            # the top left pixel is background: the scene's colour, give or take gradient and grain
            assert np.abs(pixels[0, 0] - np.asarray(scene["background"])).max() <= 35


def test_render_works_at_several_sizes_and_rejects_tiny_ones():
    scene = make_scene(0)
    for size in (32, 64, 256):
        img = render_scene(scene, size)
        assert img.mode == "RGB" and img.size == (size, size)
    with pytest.raises(ValueError, match="size"):
        render_scene(scene, 4)


def test_bad_keys_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="split must be one of"):
        make_scene(0, split="test")
    with pytest.raises(ValueError, match="index must be a non-negative integer"):
        make_scene(-1)
    with pytest.raises(ValueError, match="n must be"):
        shapes_records(-3)


def test_records_are_cheap_metadata_with_coco_names_and_distinct_val_scenes():
    train, val = shapes_records(20, seed=4), shapes_records(20, seed=4, split="val")
    assert [r.image_id for r in train] == list(range(20))
    assert [r.image_id for r in val] == [1_000_000 + i for i in range(20)]
    assert train[7].file_name == "COCO_train2014_000000000007.jpg"
    assert val[7].file_name == "COCO_val2014_000001000007.jpg"
    assert all(r.path is None and r.split == "val" for r in val)
    assert train[3].attributes == make_scene(3, seed=4) and train[3].captions == train[3].attributes["captions"]
    train_captions = {c for r in train for c in r.captions}
    assert sum(c in train_captions for r in val for c in r.captions) < 5  # different scenes, not a copy


def test_write_coco_layout_writes_both_splits_like_coco_2014(tmp_path):
    root = str(tmp_path / "coco")
    write_coco_layout(root, 6, seed=2, split="train", size=48)
    write_coco_layout(root, 4, seed=2, split="val", size=32)
    annotation_ids = []
    for split, n, size, offset in (("train", 6, 48, 0), ("val", 4, 32, 1_000_000)):
        with open(os.path.join(root, "annotations", f"captions_{split}2014.json")) as f:
            coco = json.load(f)
        assert set(coco) == {"info", "images", "licenses", "annotations"}
        assert [im["id"] for im in coco["images"]] == [offset + i for i in range(n)]
        for image in coco["images"]:
            assert set(image) == {"id", "file_name", "width", "height"}
            assert image["file_name"] == f"COCO_{split}2014_{image['id']:012d}.jpg"
            with Image.open(os.path.join(root, f"{split}2014", image["file_name"])) as img:
                assert img.format == "JPEG" and img.size == (size, size) and img.mode == "RGB"
        assert len(coco["annotations"]) == 5 * n
        for ann in coco["annotations"]:
            assert set(ann) == {"id", "image_id", "caption"}
        by_image = collections.defaultdict(list)
        for ann in coco["annotations"]:
            by_image[ann["image_id"]].append(ann["caption"])
        scene = make_scene(1, seed=2, split=split)
        assert by_image[offset + 1] == scene["captions"]
        assert sorted(os.listdir(os.path.join(root, f"{split}2014"))) == sorted(
            im["file_name"] for im in coco["images"])
        annotation_ids += [a["id"] for a in coco["annotations"]]
    assert len(set(annotation_ids)) == len(annotation_ids)  # unique across splits, as in COCO
    assert not [f for f in os.listdir(os.path.join(root, "annotations")) if f.endswith(".tmp")]
