"""The shard builder's command line in real subprocesses: bad invocations, settings changes,
verify, parts + merge, and the `textgan shards` route."""

import json
import os
import shutil
import subprocess
import tarfile

import pytest
from build_util import PYTHON, REPO, all_samples, read_bytes, read_manifest, run_build
from coco_fixture import make_coco_fixture

SHAPES = ["shapes", "--n", 30, "--resolution", 16, "--samples-per-shard", 10, "--no-progress", "--workers", 1]


@pytest.fixture(scope="module")
def shapes_out(tmp_path_factory):
    """A finished shapes build; tests that damage it work on a copy."""
    out = tmp_path_factory.mktemp("built") / "out"
    assert run_build(*SHAPES, "--outdir", out).returncode == 0
    return out


def _copy(out, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


def _malformed_json_root(root):
    make_coco_fixture(root, with_bad_cases=False)
    path = root / "annotations" / "captions_val2014.json"
    path.write_text(path.read_text()[:200])  # cut in the middle
    return root


@pytest.mark.parametrize("case, expected", [
    ("missing root", ["does not exist", "annotations/"]),
    ("missing annotation", ["captions_val2014.json not found", "annotations_trainval2014.zip"]),
    ("malformed JSON", ["is not valid JSON", "download and unpack it again"]),
    ("unknown split", ["unknown split 'test'", "train, val"]),
])
def test_bad_invocations_exit_2_with_a_message_and_write_nothing(tmp_path, case, expected):
    root, split = tmp_path / "coco", "val"
    if case == "missing annotation":
        (root / "val2014").mkdir(parents=True)
    elif case == "malformed JSON":
        _malformed_json_root(root)
    elif case == "unknown split":
        make_coco_fixture(root, with_bad_cases=False)
        split = "test"
    out = tmp_path / "out"
    proc = run_build("coco", "--root", root, "--split", split, "--outdir", out, "--no-progress")
    assert proc.returncode == 2, proc.stderr
    for text in expected:
        assert text in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--quality", "0"], "JPEG quality must be >= 1"),
    # Training accepts only these sides (config validation and the networks use the same list), so
    # the builder refuses any other before writing a shard that could never be trained on.
    (["--resolution", "30"], "resolution must be one of 16, 32, 64, 128, 256, 512, 1024"),
    (["--resolution", "4"], "resolution must be one of 16, 32, 64, 128, 256, 512, 1024"),
    (["--resolution", "2048"], "resolution must be one of 16, 32, 64, 128, 256, 512, 1024"),
    (["--num-parts", "2", "--part", "2"], "--part 2 is not in 0..1"),
    (["--crop", "stretch"], "invalid choice: 'stretch'"),
    (["--clip-pretrained", "openai"], "need --clip-model"),
])
def test_invalid_options_exit_2(tmp_path, args, message):
    proc = run_build(*SHAPES, "--outdir", tmp_path / "out", *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "out").exists()


def test_other_settings_are_refused_and_overwrite_rebuilds(shapes_out, tmp_path):
    out = _copy(shapes_out, tmp_path)
    (out / "notes.txt").write_text("not ours")
    before = read_bytes(out / "manifest.json")
    proc = run_build(*SHAPES, "--outdir", out, "--quality", 80)
    assert proc.returncode == 2
    assert "settings.quality" in proc.stderr and "--overwrite" in proc.stderr
    assert read_bytes(out / "manifest.json") == before  # untouched

    proc = run_build(*SHAPES, "--outdir", out, "--quality", 80, "--samples-per-shard", 20, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    m = read_manifest(out)
    assert (m["settings"]["quality"], [s["samples"] for s in m["shards"]]) == (80, [20, 10])
    assert sorted(os.listdir(out)) == ["build_settings.json", "manifest.json", "notes.txt", "train-000000.tar",
                                       "train-000000.tar.record.json", "train-000001.tar",
                                       "train-000001.tar.record.json"]


def test_rerun_of_a_finished_build_changes_nothing(shapes_out, tmp_path):
    out = _copy(shapes_out, tmp_path)
    before = {n: read_bytes(out / n) for n in os.listdir(out)}
    proc = run_build(*SHAPES, "--outdir", out)
    assert proc.returncode == 0 and "already complete" in proc.stdout
    assert {n: read_bytes(out / n) for n in os.listdir(out)} == before


def test_summary_names_counts_output_and_verify_command(tmp_path):
    proc = run_build(*[a for a in SHAPES if a != "--no-progress"], "--outdir", tmp_path / "o")
    assert proc.returncode == 0
    assert "30/30" in proc.stderr and "img/s" in proc.stderr  # the progress bar
    assert "samples written: 30 in 3 shards" in proc.stdout
    assert "skipped: 0" in proc.stdout and "captions dropped: 0" in proc.stdout
    assert f"verify with: shards/build.py verify {tmp_path / 'o'}" in proc.stdout
    assert str(tmp_path / "o" / "manifest.json") in proc.stdout


def test_verify_passes_a_clean_build(shapes_out):
    proc = run_build("verify", shapes_out)
    assert proc.returncode == 0 and "verified 3 shards, 30 samples" in proc.stdout and "OK" in proc.stdout
    assert run_build(*SHAPES, "--outdir", shapes_out, "--verify").returncode == 0


def _flip_a_jpeg_byte(path):
    """Change one byte inside the first JPEG's scan data (same size, different sha256)."""
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
    data = bytearray(read_bytes(path))
    pos = member.offset_data + member.size // 2
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    ("modify", "train-000001.tar: sha256 differs"),
    ("truncate", "train-000001.tar: sha256 differs"),
    ("delete", "train-000001.tar: shard file is missing"),
])
def test_verify_names_a_damaged_shard(shapes_out, tmp_path, damage, message):
    out = _copy(shapes_out, tmp_path)
    shard = out / "train-000001.tar"
    if damage == "modify":
        _flip_a_jpeg_byte(shard)
    elif damage == "truncate":
        shard.write_bytes(read_bytes(shard)[: shard.stat().st_size // 3])
    else:
        shard.unlink()
    proc = run_build("verify", out)
    assert proc.returncode == 1
    assert message in proc.stderr and "train-000000.tar" not in proc.stderr
    if damage == "truncate":
        assert "holds" in proc.stderr or "not a readable tar" in proc.stderr


def test_parts_build_separately_and_merge(tmp_path):
    out, whole = tmp_path / "parts", tmp_path / "whole"
    args = [*SHAPES[:-2], "--workers", 1, "--num-parts", 2]
    assert run_build(*args, "--part", 1, "--outdir", out).returncode == 0
    proc = run_build("merge", out)
    assert proc.returncode == 2
    assert "part(s) 0 of 2 are not finished" in proc.stderr and "manifest.part-000-of-002.json" in proc.stderr
    assert not (out / "manifest.json").exists()

    assert run_build(*args, "--part", 0, "--outdir", out).returncode == 0
    proc = run_build("merge", out)
    assert proc.returncode == 0, proc.stderr
    m = read_manifest(out)
    assert [s["name"] for s in m["shards"]] == ["train-p000-000000.tar", "train-p000-000001.tar",
                                                "train-p001-000000.tar", "train-p001-000001.tar"]
    assert [s["samples"] for s in m["shards"]] == [10, 5, 10, 5] and m["samples"] == 30
    assert m["settings"]["num_parts"] == 2 and "part" not in m

    assert run_build(*SHAPES, "--outdir", whole).returncode == 0
    parts_order = [int(k) for _, k, _ in all_samples(out)]
    assert parts_order == [int(k) for _, k, _ in all_samples(whole)]  # same plan, cut in two
    assert run_build("verify", out).returncode == 0


def test_textgan_command_routes_to_the_builder(shapes_out):
    proc = subprocess.run([PYTHON, "-m", "textgan.cli", "shards", "verify", str(shapes_out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "verified 3 shards" in proc.stdout


def test_out_under_a_regular_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_build(*SHAPES, "--outdir", blocker / "out")
    assert proc.returncode == 2
    assert "cannot create the output directory" in proc.stderr and "not a directory" in proc.stderr
    assert blocker.read_text() == "x"


def test_manifest_json_is_deterministic_text(shapes_out):
    text = read_bytes(shapes_out / "manifest.json").decode()
    m = json.loads(text)
    assert text == json.dumps(m, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    assert str(shapes_out) not in text  # no output path, no times: identical after resume
