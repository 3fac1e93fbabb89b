"""The repository's own files agree with what setup.cfg declares about them."""

import configparser
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    return cfg


def test_the_declared_mit_license_ships_as_a_file():
    cfg = _setup_cfg()
    assert cfg["metadata"]["license"] == "MIT" and cfg["metadata"]["license_files"] == "LICENSE"
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 the textgan authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_every_path_a_pytest_marker_names_exists():
    markers = _setup_cfg()["tool:pytest"]["markers"]
    named = re.findall(r"\((tests/[^)]*)\)", markers)
    assert named, markers  # the slurm marker says where the cluster script is
    assert [path for path in named if not os.path.exists(os.path.join(ROOT, path))] == []
