"""textgan.data.building.overlap: planted id and byte duplicates between val and train are found, nothing else."""

import json
import os
import shutil
import time

import pytest
from coco_fixture import CASES, coco_file_name, make_coco_fixture

from textgan.data.sources.coco import read_coco
from textgan.data.building.overlap import find_overlap, image_id_from_name
from textgan.data.records import Record
from textgan.errors import UsageError


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco_fixture(tmp_path_factory.mktemp("coco"))


def _records(coco, split):
    return read_coco(coco["root"], split).records


def _file(coco, split, image_id):
    return os.path.join(coco["root"], f"{split}2014", coco_file_name(split, image_id))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("000000123456.jpg", 123456),
        ("COCO_train2014_000000123456.jpg", 123456),
        ("COCO_val2014_000000000042.JPG", 42),
        ("/some/dir/7.png", 7),
        ("img2.jpg", None),
        ("notes.txt", None),
    ],
)
def test_image_id_from_name(name, expected):
    assert image_id_from_name(name) == expected


def test_val_against_coco_root_uses_the_train_split(coco):
    result = find_overlap(_records(coco, "val"), coco["root"])
    assert result == {"checked_against": coco["root"], **coco["overlap"]}
    assert result["ids"] == [CASES["val_same_id"]] and result["bytes"] == [CASES["val_same_bytes"]]
    # val's empty file has the same (zero) size as train's empty file: not a duplicate image.
    assert CASES["val_empty"] not in result["bytes"]


def test_train_against_coco_root_uses_the_val_split(coco):
    result = find_overlap(_records(coco, "train"), coco["root"])
    assert {k: result[k] for k in ("ids", "bytes")} == coco["overlap_train"] == {"ids": [5], "bytes": [1]}


def test_val_against_an_image_folder(coco):
    folder = os.path.join(coco["root"], "train2014")
    result = find_overlap(_records(coco, "val"), folder + "/")
    assert result == {"checked_against": folder, "ids": [5], "bytes": [105]}


def test_val_against_a_coco_2017_style_folder(coco, tmp_path):
    folder = tmp_path / "train2017"
    folder.mkdir()
    shutil.copy(_file(coco, "train", 2), folder / "000000000005.jpg")  # id 5, other pixels
    shutil.copy(_file(coco, "train", 1), folder / "000000000777.jpg")  # val 105's bytes, other id
    shutil.copy(_file(coco, "train", 3), folder / "000000000103.jpg")  # id of val 103, other bytes
    (folder / "readme.txt").write_text("no id in this name")
    result = find_overlap(_records(coco, "val"), str(folder))
    assert result == {"checked_against": str(folder), "ids": [5, 103], "bytes": [105]}


def test_val_against_an_annotation_json_checks_ids_only(coco):
    path = os.path.join(coco["root"], "annotations", "captions_train2014.json")
    result = find_overlap(_records(coco, "val"), path)
    assert result == {"checked_against": path, "ids": [5], "bytes": []}


def test_val_against_a_coco_2017_root(coco, tmp_path):
    """The classic contamination: train2017 holds val2014 images under their val2014 ids."""
    root = tmp_path / "coco2017"
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (5, 104, 900)]
    (root / "annotations" / "captions_train2017.json").write_text(json.dumps({"images": images, "annotations": []}))
    shutil.copy(_file(coco, "val", 102), root / "train2017" / "000000000900.jpg")
    result = find_overlap(_records(coco, "val"), str(root))
    assert result == {"checked_against": str(root), "ids": [5, 104], "bytes": [102]}


def test_records_without_a_file_are_ignored(coco, tmp_path):
    missing = Record(5, "gone.jpg", ["x"], "val", path=str(tmp_path / "gone.jpg"))
    generated = Record(5, "shape.jpg", ["x"], "val", path=None)
    present = Record(CASES["val_same_bytes"], "x.jpg", ["x"], "val", path=_file(coco, "val", CASES["val_same_bytes"]))
    result = find_overlap([missing, generated, present], coco["root"])
    assert result["ids"] == [] and result["bytes"] == [CASES["val_same_bytes"]]
    assert find_overlap([], coco["root"]) == {"checked_against": coco["root"], "ids": [], "bytes": []}


def test_only_files_whose_size_collides_are_hashed(coco, tmp_path):
    """A 16 GiB sparse reference file of a size no record has must never be read:
    hashing it would take tens of seconds, the size check takes microseconds."""
    folder = tmp_path / "reference"
    folder.mkdir()
    shutil.copy(_file(coco, "train", 1), folder / "000000000777.jpg")
    huge = folder / "000000000888.jpg"
    with open(huge, "wb") as f:
        f.truncate(16 << 30)
    if os.stat(huge).st_blocks * 512 > (1 << 20):  # the file system wrote real zeros
        os.remove(huge)
        pytest.skip("no sparse files on this file system")
    start = time.perf_counter()
    result = find_overlap(_records(coco, "val"), str(folder))
    assert result["bytes"] == [CASES["val_same_bytes"]]
    assert time.perf_counter() - start < 5.0


def test_bad_references_are_usage_errors(coco, tmp_path):
    records = _records(coco, "val")
    with pytest.raises(UsageError, match="does not exist"):
        find_overlap(records, str(tmp_path / "nowhere"))
    (tmp_path / "list.txt").write_text("1\n2\n")
    with pytest.raises(UsageError, match=r"list\.txt is a file but not a \.json"):
        find_overlap(records, str(tmp_path / "list.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no"):
        find_overlap(records, str(tmp_path / "empty"))
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(UsageError, match="not valid JSON"):
        find_overlap(records, str(tmp_path / "broken.json"))
    with pytest.raises(UsageError, match="OTHER split"):
        find_overlap(records, os.path.join(coco["root"], "val2014"))


def test_coco_root_without_the_other_split(coco, tmp_path):
    root = tmp_path / "val_only"
    (root / "annotations").mkdir(parents=True)
    shutil.copy(os.path.join(coco["root"], "annotations", "captions_val2014.json"), root / "annotations")
    with pytest.raises(UsageError) as error:
        find_overlap(_records(coco, "val"), str(root))
    assert "captions_train2014.json" in str(error.value) and "train2014/" in str(error.value)


def test_mixed_splits_are_a_programming_error(coco):
    with pytest.raises(ValueError, match="one split"):
        find_overlap(_records(coco, "val") + _records(coco, "train"), coco["root"])
