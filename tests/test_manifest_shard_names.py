"""A manifest may only name tars that lie in its own directory: every reader of manifest shard names
(training and evaluation loaders, verify, merge, the metrics reference index, the CLI) refuses an
entry like `../x.tar` or an absolute path, naming the manifest and the entry, before reading anything.

The planted entries point at a real, readable tar outside the shard directory, so a reader that
followed them would succeed (that is what happened before the check)."""

import json
import os
import shutil

import pytest
from build_util import run_build
from shard_fixture import write_shards

from textgan.data import format as fmt
from textgan.data.loading.loader import eval_loader, train_loader
from textgan.data.building.merge import merge_parts
from textgan.data.building.verify import verify_shards
from textgan.errors import UsageError
from textgan.metrics.reference import load_index


def _plant(shards_dir, name, manifest_name=fmt.MANIFEST_NAME):
    """Rewrite shards_dir's manifest so that its second entry is `name`; return the manifest path."""
    path = os.path.join(shards_dir, fmt.MANIFEST_NAME)
    with open(path) as f:
        manifest = json.load(f)
    manifest["shards"][1]["name"] = name
    planted = os.path.join(shards_dir, manifest_name)
    with open(planted, "w") as f:
        json.dump(manifest, f)
    return planted


@pytest.fixture
def outside(tmp_path):
    """A shard directory plus a readable tar outside it: tmp/outside/stolen.tar."""
    shards = tmp_path / "shards"
    write_shards(shards, 16, 4)
    os.makedirs(tmp_path / "outside")
    stolen = tmp_path / "outside" / "stolen.tar"
    shutil.copy(shards / fmt.shard_name("train", 1), stolen)
    return shards, str(stolen)


def _escapes(stolen):
    return ["../outside/stolen.tar", stolen]  # a relative escape, an absolute path


@pytest.mark.parametrize("which", [0, 1], ids=["dotdot", "absolute"])
def test_loaders_verify_and_reference_refuse_a_shard_name_outside_the_directory(outside, tmp_path, which):
    shards, stolen = outside
    name = _escapes(stolen)[which]
    manifest = _plant(shards, name)
    readers = {
        "train_loader": lambda: next(iter(train_loader(shards, 4, num_workers=0))),
        "eval_loader": lambda: list(eval_loader(shards, 4, num_workers=0)),
        "verify": lambda: verify_shards(str(shards)),
        "metrics reference": lambda: load_index(str(shards), str(tmp_path / "cache")),
    }
    for reader, read in readers.items():
        with pytest.raises(UsageError) as refused:
            read()
        message = str(refused.value)
        assert manifest in message and "shards[1]" in message and repr(name) in message, reader
        assert "not a plain file name" in message, reader
    assert not os.path.exists(tmp_path / "cache")  # refused before the index was built or cached


def test_merge_refuses_a_part_manifest_naming_a_file_outside_and_writes_nothing(outside):
    shards, stolen = outside
    part0 = _plant(shards, "../outside/stolen.tar", fmt.PART_MANIFEST_PATTERN.format(part=0, num_parts=1))
    os.remove(shards / fmt.MANIFEST_NAME)
    with pytest.raises(UsageError, match=r"shards\[1\] has name '\.\./outside/stolen\.tar'") as refused:
        merge_parts(str(shards))
    assert part0 in str(refused.value)
    assert not os.path.exists(shards / fmt.MANIFEST_NAME)


def test_verify_cli_exits_2_naming_the_entry(outside):
    shards, stolen = outside
    _plant(shards, stolen)
    proc = run_build("verify", shards)
    assert proc.returncode == 2, proc.stderr
    assert "shards[1]" in proc.stderr and "not a plain file name" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["sub/train-000001.tar", "..", "", None, "a\\b.tar"])
def test_other_non_plain_names_are_refused_too(outside, name):
    shards, _ = outside
    _plant(shards, name)
    with pytest.raises(UsageError, match=r"shards\[1\]"):
        train_loader(shards, 4, num_workers=0)
