"""Run directories: `outdir/{id:05d}-{desc}/`, and what makes a run reproducible from its directory.

Every run is reproducible from its run dir: `config.yaml` holds the resolved config (it loads back
with textgan.config.load_config), `run.json` the code version (git commit + dirty flag, package
versions), the command line, the host and the seed, plus any warning the run must carry with it
(e.g. a text encoder with random weights).

Only the main rank creates the run dir and writes these files; the Runtime passes the path on.
"""

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import time
from typing import Iterable, Optional, Sequence

from omegaconf import OmegaConf

import textgan
from textgan.atomic import write_text_atomic

RUN_ID_DIGITS = 5
CONFIG_FILE = "config.yaml"
RUN_INFO_FILE = "run.json"
# Distributions whose versions decide what a run computes (read from metadata: importing
# deepspeed alone costs seconds and prints accelerator warnings).
VERSIONED_DISTRIBUTIONS = ("torch", "deepspeed", "open_clip_torch", "torchvision", "webdataset", "numpy", "pillow")
_LEADING_ID = re.compile(r"^(\d+)")
_UNSAFE_DESC_CHARS = re.compile(r"[^A-Za-z0-9._+=-]+")
MAX_CREATE_ATTEMPTS = 100


def _run_ids(outdir: str) -> list:
    """Numeric prefixes of the entries in outdir (StyleGAN counts every entry that starts with digits)."""
    return [int(m.group(1)) for name in os.listdir(outdir) if (m := _LEADING_ID.match(name))]


def _run_dir_name(run_id: int, desc: str) -> str:
    return f"{run_id:0{RUN_ID_DIGITS}d}-{desc}" if desc else f"{run_id:0{RUN_ID_DIGITS}d}"


def sanitize_desc(desc: str) -> str:
    """A run description usable as part of a directory name: spaces, slashes etc. become '-'."""
    return _UNSAFE_DESC_CHARS.sub("-", str(desc)).strip("-")


def create_run_dir(outdir: str, desc: str) -> str:
    """Create and return `outdir/{id:05d}-{desc}`, id = 1 + the largest numeric prefix in outdir (0 first).

    Safe when several jobs (a sweep) start at once in the same outdir, without locks (which NFS and
    Lustre do not always honour): os.mkdir is atomic, so two processes can never both create the same
    name; and two processes with different descs that picked the same id notice each other, because
    each lists outdir after its own mkdir. A process that sees a second directory with its id backs
    off (removes its still-empty directory) and tries again. The first one to list while alone keeps
    its id, and everyone who comes later sees it; so no id is ever kept twice. (When all contenders
    back off, that id stays unused: under contention the numbering may skip a number.)
    """
    desc = sanitize_desc(desc)
    os.makedirs(outdir, exist_ok=True)
    rng = random.Random()  # back-off jitter only; seeded from the OS so racing processes differ
    for _ in range(MAX_CREATE_ATTEMPTS):
        run_id = max(_run_ids(outdir), default=-1) + 1
        path = os.path.join(outdir, _run_dir_name(run_id, desc))
        try:
            os.mkdir(path)
        except FileExistsError:
            continue  # someone took this exact name between our listing and our mkdir
        if _run_ids(outdir).count(run_id) == 1:
            return path
        os.rmdir(path)  # contested id: step back, wait a little, pick again
        time.sleep(rng.uniform(0.0, 0.05))
    raise RuntimeError(
        f"could not create a run directory in {outdir} after {MAX_CREATE_ATTEMPTS} attempts; "
        "are very many runs starting there at the same moment?"
    )


def _resolved_yaml(cfg) -> str:
    # schema order (data, model, ...) reads better than sorted keys; the hash sorts
    return OmegaConf.to_yaml(cfg, resolve=True)


def config_hash(cfg, ignore: Iterable[str] = ()) -> str:
    """sha256 (hex) of the canonical (resolved, key-sorted) YAML of cfg.

    ignore: dotted keys left out, for callers that accept some differences (e.g. a resume that
    extends schedule.total_kimg). Unknown keys in `ignore` raise KeyError (a typo would silently
    change what the hash covers)."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    for key in ignore:
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node[part]
        del node[leaf]
    canonical = OmegaConf.to_yaml(OmegaConf.create(tree), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _git(args: Sequence[str], cwd: str) -> Optional[str]:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine, or a hung file system
        return None
    return done.stdout if done.returncode == 0 else None


def code_version(package_dir: Optional[str] = None) -> dict:
    """The textgan source that runs: git commit + dirty state when the package is a git checkout.

    "Dirty" looks only at the package directory (untracked files included: a new module that is
    not committed changes the code); run dirs or notes elsewhere in the repository do not count.
    An installed (non-checkout) package gives commit None; its version string still identifies it.
    package_dir: the directory to inspect (default: the imported textgan package)."""
    package_dir = package_dir or os.path.dirname(os.path.abspath(textgan.__file__))
    version = {"textgan": textgan.__version__, "package_dir": package_dir, "git_commit": None, "git_dirty": None}
    # ls-files: a venv or site-packages that happens to sit inside some repository is not our checkout
    if _git(["ls-files", "--error-unmatch", "__init__.py"], package_dir) is None:
        return version
    commit = _git(["rev-parse", "HEAD"], package_dir)
    status = _git(["status", "--porcelain", "--untracked-files=all", "--", "."], package_dir)
    if commit is not None:
        version["git_commit"] = commit.strip()
    if status is not None:
        changed = [line[3:] for line in status.splitlines() if line.strip()]
        version["git_dirty"] = bool(changed)
        version["git_dirty_files"] = changed[:50]
    return version


def library_versions() -> dict:
    """Installed versions of the libraries that shape the computation (None: not installed)."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_warnings(cfg) -> list:
    """Warnings implied by the config itself, recorded in run.json so nobody mistakes the run."""
    found = []
    if cfg.text_encoder.random_weights:
        found.append(
            f"text encoder {cfg.text_encoder.model!r} has RANDOM weights (text_encoder.random_weights=true): "
            "its embeddings are deterministic functions of the text but carry no meaning; results are "
            "not comparable with runs that use pretrained CLIP weights."
        )
    return found


def write_run_info(
    run_dir: str,
    cfg,
    argv: Optional[Sequence[str]] = None,
    *,
    warnings: Sequence[str] = (),
    extra: Optional[dict] = None,
) -> dict:
    """Write run_dir/config.yaml (the resolved config) and run_dir/run.json; return run.json's content.

    argv: the command line (default sys.argv). warnings: messages to record besides those the config
    implies (run_warnings). extra: more JSON-serializable fields (e.g. world size, resumed_from).
    Both files are written atomically, so a reader never sees half a file."""
    write_text_atomic(os.path.join(run_dir, CONFIG_FILE), _resolved_yaml(cfg))
    info = {
        "command": list(sys.argv if argv is None else argv),
        "cwd": os.getcwd(),
        "hostname": socket.gethostname(),
        "seed": int(cfg.seed),
        "config_hash": config_hash(cfg),
        "code": code_version(),
        "versions": library_versions(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "warnings": run_warnings(cfg) + list(warnings),
        **(extra or {}),
    }
    write_text_atomic(os.path.join(run_dir, RUN_INFO_FILE), json.dumps(info, indent=2) + "\n")
    return info
