"""textgan.data.sources.coco: COCO 2014 captions -> Records; every bad invocation is a UsageError that says what to do."""

import hashlib
import json
import os

import pytest
from coco_fixture import CASES, MULTILINE_NORMALIZED, make_coco_fixture

from textgan.data.sources.coco import annotation_path, image_dir, normalize_caption, read_coco
from textgan.errors import UsageError


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco_fixture(tmp_path_factory.mktemp("coco"))


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("A dog.", "A dog."),
        ("  A dog  on\n\na   sofa. \n", "A dog on a sofa."),
        ("line one\r\nline two\tend", "line one line two end"),
        ("non\u00a0breaking\u2003spaces", "non breaking spaces"),
        (" \n\t\r ", ""),
        ("", ""),
        (None, ""),
        (42, ""),
        (["a list"], ""),
    ],
)
def test_normalize_caption(raw, expected):
    assert normalize_caption(raw) == expected


def test_paths_follow_the_coco_2014_layout():
    assert annotation_path("/data/coco", "val") == "/data/coco/annotations/captions_val2014.json"
    assert image_dir("/data/coco", "train") == "/data/coco/train2014"
    with pytest.raises(UsageError, match="'test'"):
        image_dir("/data/coco", "test")


@pytest.mark.parametrize("split", ["train", "val"])
def test_read_coco_matches_the_fixture(coco, split):
    expect = coco[split]
    index = read_coco(coco["root"], split)
    ids = [r.image_id for r in index.records]
    assert ids == sorted(expect["captions"])  # sorted by id; image-skipped files are still records
    assert {r.image_id: r.captions for r in index.records} == expect["captions"]
    for record in index.records:
        assert record.split == split and record.attributes is None
        assert record.file_name == expect["file_names"][record.image_id]
        assert record.path == os.path.join(coco["root"], f"{split}2014", record.file_name)
        assert os.path.isabs(record.path)
    assert index.skipped == [
        {"image_id": i, "file_name": expect["file_names"][i], "reason": r} for i, r in expect["skip_reading"].items()
    ]
    assert index.captions_dropped_by_reason == expect["captions_dropped_by_reason"]
    assert index.captions_dropped == expect["captions_dropped"]
    assert index.annotations_path == os.path.join(coco["root"], "annotations", f"captions_{split}2014.json")
    with open(index.annotations_path, "rb") as f:
        assert index.annotations_sha256 == hashlib.sha256(f.read()).hexdigest()


def test_caption_cleaning_details(coco):
    records = {r.image_id: r for r in read_coco(coco["root"], "train").records}
    assert records[CASES["multiline_caption"]].captions[0] == MULTILINE_NORMALIZED
    # The duplicate differed only in whitespace; the first occurrence (file order) is kept.
    duplicate = records[CASES["duplicate_caption"]].captions
    assert len(duplicate) == len(set(duplicate))
    assert CASES["unknown_caption_id"] not in records
    # Listed-but-missing files are records: read_coco never touches image files.
    assert not os.path.exists(records[CASES["missing"]].path)
    assert coco["train"]["skip_reading"] == {CASES["no_captions"]: "no captions", CASES["only_blank_captions"]: "no captions"}


def test_clean_fixture_has_nothing_to_skip_or_drop(tmp_path):
    expect = make_coco_fixture(tmp_path / "clean", with_bad_cases=False)
    for split in ("train", "val"):
        index = read_coco(str(tmp_path / "clean"), split)
        assert [r.image_id for r in index.records] == expect[split]["good_ids"]
        assert index.skipped == [] and index.captions_dropped == 0 and index.captions_dropped_by_reason == {}
    assert expect["overlap"] == {"ids": [], "bytes": []}


# ---------------------------------------------------------------- usage errors


def _valid():
    return {
        "images": [{"id": 1, "file_name": "COCO_val2014_000000000001.jpg"}, {"id": 2, "file_name": "COCO_val2014_000000000002.jpg"}],
        "annotations": [{"image_id": 1, "caption": "a"}, {"image_id": 2, "caption": "b"}],
    }


def _root_with(tmp_path, content, split="val") -> str:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    path = root / "annotations" / f"captions_{split}2014.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(content))
    return str(root)


def _usage_error(root, split="val") -> str:
    with pytest.raises(UsageError) as error:
        read_coco(root, split)
    return str(error.value)


def test_minimal_valid_file_reads(tmp_path):
    index = read_coco(_root_with(tmp_path, _valid()), "val")
    assert [(r.image_id, r.captions) for r in index.records] == [(1, ["a"]), (2, ["b"])]


def test_missing_root_and_root_that_is_a_file(tmp_path):
    message = _usage_error(str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in message and "does not exist" in message and "annotations/" in message
    (tmp_path / "file").write_text("x")
    message = _usage_error(str(tmp_path / "file"))
    assert "is not a directory" in message


def test_unknown_split(tmp_path):
    message = _usage_error(_root_with(tmp_path, _valid()), split="test")
    assert "'test'" in message and "train, val" in message


def test_missing_annotation_file_says_where_it_was_expected(tmp_path):
    root = tmp_path / "coco"
    root.mkdir()
    message = _usage_error(str(root), "train")
    assert str(root / "annotations" / "captions_train2014.json") in message
    assert "annotations_trainval2014.zip" in message


def test_coco_2017_root_gets_a_hint(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(_valid()))
    message = _usage_error(str(root))
    assert "COCO 2017" in message and "2014" in message


def test_malformed_json_reports_the_position(tmp_path):
    text = json.dumps(_valid(), indent=1)
    message = _usage_error(_root_with(tmp_path, text[: len(text) // 2].encode()))
    assert "captions_val2014.json is not valid JSON" in message and "line " in message and "column " in message


def test_non_utf8_file(tmp_path):
    message = _usage_error(_root_with(tmp_path, b"\xff\xfe\x00garbage"))
    assert "captions_val2014.json" in message


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: [d], "JSON list"),
        (lambda d: {"annotations": d["annotations"]}, 'has no "images"'),
        (lambda d: {**d, "annotations": {"0": {}}}, 'has "annotations" as a dict'),
        (lambda d: {**d, "images": d["images"] + ["COCO_val2014_3.jpg"]}, "images[2] is not an object (got 'COCO_val2014_3.jpg')"),
        (lambda d: {**d, "images": d["images"] + [{"file_name": "x.jpg"}]}, 'images[2] has no integer "id"'),
        (lambda d: {**d, "images": d["images"] + [{"id": "3", "file_name": "x.jpg"}]}, "got '3'"),
        (lambda d: {**d, "images": d["images"] + [{"id": True, "file_name": "x.jpg"}]}, "images[2]"),
        (lambda d: {**d, "images": d["images"] + [{"id": 3}]}, 'images[2] (id 3) has no plain "file_name"'),
        (lambda d: {**d, "images": d["images"] + [{"id": 3, "file_name": "../../etc/passwd"}]}, "images[2] (id 3)"),
        (lambda d: {**d, "images": d["images"] + [{"id": 1, "file_name": "other.jpg"}]}, "images[2] repeats image id 1 of images[0]"),
        (lambda d: {**d, "annotations": [7] + d["annotations"]}, "annotations[0] is not an object (got 7)"),
        (lambda d: {**d, "annotations": d["annotations"] + [{"caption": "c"}]}, 'annotations[2] has no integer "image_id"'),
        (lambda d: {**d, "annotations": d["annotations"] + [{"image_id": 1, "caption": None}]}, 'annotations[2] has no string "caption"'),
    ],
)
def test_malformed_structure_names_the_entry(tmp_path, mutate, expected):
    message = _usage_error(_root_with(tmp_path, mutate(_valid())))
    assert expected in message, message
    assert "captions_val2014.json" in message
