"""Run directories: StyleGAN numbering, safe when runs start at the same moment, and a run.json +
config.yaml from which the run can be reproduced."""

import json
import os
import re
import socket
import subprocess
import sys
import threading

import pytest
import torch

import textgan
from textgan.config import load_config, to_yaml
from textgan.train.rundir import code_version, config_hash, create_run_dir, sanitize_desc, write_run_info

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "demo.yaml")
COCO = os.path.join(REPO, "configs", "coco64.yaml")


def test_first_run_is_00000(tmp_path):
    outdir = tmp_path / "runs"  # created when missing
    assert create_run_dir(str(outdir), "demo") == str(outdir / "00000-demo")
    assert create_run_dir(str(outdir), "demo") == str(outdir / "00001-demo")
    assert sorted(os.listdir(outdir)) == ["00000-demo", "00001-demo"]


def test_next_id_follows_the_largest_numeric_prefix(tmp_path):
    for name in ("00000-a", "00007-b", "00003-c"):
        (tmp_path / name).mkdir()
    (tmp_path / "00011.log").write_text("a file counts too, as in StyleGAN")
    (tmp_path / "notes").mkdir()  # no number: ignored
    assert os.path.basename(create_run_dir(str(tmp_path), "x")) == "00012-x"


def test_desc_is_made_safe_for_a_directory_name(tmp_path):
    assert sanitize_desc("coco64 lr=0.002/bs 32") == "coco64-lr=0.002-bs-32"
    path = create_run_dir(str(tmp_path), "a b/c")
    assert os.path.basename(path) == "00000-a-b-c" and os.path.isdir(path)
    assert os.path.basename(create_run_dir(str(tmp_path), "")) == "00001"


def test_racing_threads_get_distinct_ids(tmp_path):
    count = 16
    barrier = threading.Barrier(count)
    made = [None] * count

    def start(i):
        barrier.wait()  # all threads list the directory at the same moment
        made[i] = create_run_dir(str(tmp_path), "ab"[i % 2])  # same and different descs

    threads = [threading.Thread(target=start, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [int(os.path.basename(p)[:5]) for p in made]
    assert len(set(ids)) == count  # no id twice (contended ids may be skipped: not asserted)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in made)  # no leftovers


def test_racing_processes_get_distinct_ids(tmp_path):
    go = tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "from textgan.train.rundir import create_run_dir\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        "print(create_run_dir(sys.argv[1], sys.argv[3]))\n"
    )
    outdir = tmp_path / "runs"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(outdir), str(go), f"job{i % 2}"],
                              stdout=subprocess.PIPE, text=True) for i in range(4)]
    go.write_text("")  # release all processes at once
    made = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({int(os.path.basename(p)[:5]) for p in made}) == 4
    assert sorted(os.listdir(outdir)) == sorted(os.path.basename(p) for p in made)


def test_config_hash_is_canonical_and_sensitive(tmp_path):
    cfg = load_config(DEMO)
    assert config_hash(cfg) == config_hash(load_config(DEMO))
    assert len(config_hash(cfg)) == 64
    longer = load_config(DEMO, ["schedule.total_kimg=1000"])
    assert config_hash(longer) != config_hash(cfg)
    assert config_hash(longer, ignore=["schedule.total_kimg"]) == config_hash(cfg, ignore=["schedule.total_kimg"])
    # the same values written in another key order hash the same
    reordered = tmp_path / "reordered.yaml"
    reordered.write_text("seed: 0\n" + re.sub(r"^seed: 0\n", "", to_yaml(cfg), flags=re.M))
    assert config_hash(load_config(str(reordered))) == config_hash(cfg)
    with pytest.raises(KeyError):
        config_hash(cfg, ignore=["schedule.totl_kimg"])


def _git_commit_of_package():
    package_dir = os.path.dirname(textgan.__file__)
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=package_dir,
                                 capture_output=True).returncode == 0
        if not tracked:
            return None
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=package_dir, capture_output=True,
                              text=True, check=True).stdout.strip()
    except OSError:
        return None


def test_run_dir_holds_config_code_version_command_host_and_seed(tmp_path):
    cfg = load_config(DEMO, ["seed=7"])
    run_dir = create_run_dir(str(tmp_path), "demo")
    argv = ["launchers/submit.py", "--local", "--config", "configs/demo.yaml", "--set", "seed=7"]
    returned = write_run_info(run_dir, cfg, argv, warnings=["custom warning"], extra={"world_size": 2})

    # the resolved config reloads to exactly the run's config
    reloaded = load_config(os.path.join(run_dir, "config.yaml"))
    assert to_yaml(reloaded) == to_yaml(cfg)
    assert config_hash(reloaded) == config_hash(cfg)

    with open(os.path.join(run_dir, "run.json")) as f:
        info = json.load(f)
    assert info == returned
    assert info["command"] == argv
    assert info["hostname"] == socket.gethostname()
    assert info["seed"] == 7
    assert info["config_hash"] == config_hash(cfg)
    assert info["world_size"] == 2
    assert info["code"]["textgan"] == textgan.__version__
    assert info["code"]["git_commit"] == _git_commit_of_package()
    if info["code"]["git_commit"] is not None:
        assert isinstance(info["code"]["git_dirty"], bool)
        assert info["code"]["git_dirty"] == bool(info["code"]["git_dirty_files"])
    assert info["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    # the demo's random text encoder is recorded loudly, next to the caller's warnings
    assert any("RANDOM weights" in w and cfg.text_encoder.model in w for w in info["warnings"])
    assert "custom warning" in info["warnings"]
    assert not any(name.endswith(".tmp") or ".tmp" in name for name in os.listdir(run_dir))


def test_pretrained_recipe_records_no_warning(tmp_path):
    info = write_run_info(str(tmp_path), load_config(COCO), ["x"])
    assert info["warnings"] == []


def _git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_code_version_of_a_checkout_clean_and_dirty(tmp_path):
    repo = tmp_path / "repo"
    package = repo / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    try:
        _git(repo, "init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    _git(repo, "add", "pkg/__init__.py")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    (repo / "elsewhere.txt").write_text("outside the package: not part of the code")

    clean = code_version(str(package))
    assert clean["git_commit"] == head and clean["git_dirty"] is False

    (package / "new_module.py").write_text("y = 2\n")  # untracked code changes what runs
    dirty = code_version(str(package))
    assert dirty["git_commit"] == head and dirty["git_dirty"] is True
    assert dirty["git_dirty_files"] == ["pkg/new_module.py"]


def test_code_version_outside_a_checkout(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    version = code_version(str(tmp_path))
    assert version["git_commit"] is None and version["git_dirty"] is None
    assert version["textgan"] == textgan.__version__
