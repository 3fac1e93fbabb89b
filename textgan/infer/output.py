"""A generation's folder: one PNG per (prompt, seed), an optional captioned grid, and generation.json.

    OUTDIR/{id:05d}-{desc}/           a new numbered folder per call (as runs/ holds runs): nothing is
        000-a-red-circle-seed0000.png     ever overwritten, and two calls never mix their images
        grid.png                      --grid: prompts as rows, seeds as columns, each captioned
        generation.json               written last: a folder without it is an interrupted call

generation.json records the model (path, weights file, sha256), every prompt and seed, the truncation
settings, the device and the image paths (relative to the folder, so that it can be moved).
"""

import json
import os
import re
from typing import Optional, Sequence

import numpy as np
import torch

import textgan
from textgan.atomic import write_text_atomic
from textgan.errors import UsageError
from textgan.train.grids import save_grid
from textgan.train.rundir import code_version, create_run_dir, run_warnings

GENERATION_FILE = "generation.json"
GRID_FILE = "grid.png"
SLUG_CHARS = 40  # enough to recognise a prompt in a file listing, short enough for any file system
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slug(prompt: str) -> str:
    """A file-name-safe excerpt of a prompt: lowercase ASCII letters and digits joined by '-'."""
    text = _NOT_SLUG.sub("-", prompt.lower())[:SLUG_CHARS].strip("-")
    return text or "prompt"


def image_name(prompt_index: int, prompt: str, seed: int) -> str:
    """PNG name of a sample; the prompt's index keeps two prompts with the same slug apart."""
    return f"{prompt_index:03d}-{slug(prompt)}-seed{seed:04d}.png"


def create_folder(outdir: str, model) -> str:
    """A new `outdir/{id:05d}-{desc}` named after the model's run (its config's desc)."""
    return create_folder_named(outdir, str(model.cfg.desc) or "generate")


def create_folder_named(outdir: str, desc: str) -> str:
    """A new `outdir/{id:05d}-{desc}`; UsageError when outdir is a file or cannot be written."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise UsageError(f"--outdir {outdir} is a file; give a directory (it is created if missing)")
    try:
        return create_run_dir(outdir, desc)
    except OSError as e:
        raise UsageError(f"--outdir {outdir}: cannot create the result folder there ({e})") from e


def save_grid_of(folder: str, samples: Sequence, ncol: int) -> str:
    """grid.png of uint8 samples, each captioned with its prompt and seed; returns its name."""
    # save_grid takes G's float range; (x / 127.5 - 1) maps back onto the very same uint8 levels
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    save_grid(images, [f"{s.prompt} (seed {s.seed})" for s in samples], os.path.join(folder, GRID_FILE), ncol=ncol)
    return GRID_FILE


def generation_record(model, prompts: Sequence[str], seeds: Sequence[int], psi: float, trunc_cutoff: Optional[int],
                      centre: str, images: Sequence[dict], grid: Optional[str], command=None) -> dict:
    """The content of generation.json. images: [{"prompt_index", "prompt", "seed", "path"}]."""
    from textgan.infer.model import CENTRE_SAMPLES

    truncated = psi != 1 and model.has_styles
    return {
        "textgan": textgan.__version__,
        "code": code_version(),
        "command": None if command is None else list(command),
        "model": {"path": os.path.abspath(model.path), "kind": model.kind, "weights_file": model.weights_file,
                  "sha256": model.sha256, "arch": model.arch, "kimg": model.kimg, "tick": model.tick,
                  "resolution": model.resolution},
        "text_encoder": {"model": str(model.cfg.text_encoder.model), "pretrained": model.cfg.text_encoder.pretrained,
                         "random_weights": bool(model.cfg.text_encoder.random_weights)},
        "psi": float(psi),
        "trunc_cutoff": trunc_cutoff,
        "centre": centre,
        "centre_samples": CENTRE_SAMPLES if truncated and centre == "conditional" else None,
        "noise_mode": "const",
        "device": str(model.device),
        "prompts": list(prompts),
        "seeds": [int(s) for s in seeds],
        "images": list(images),
        "grid": grid,
        "warnings": run_warnings(model.cfg),
    }


def write_record(folder: str, record: dict) -> str:
    path = os.path.join(folder, GENERATION_FILE)
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path
