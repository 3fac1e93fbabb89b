"""Full-state checkpoints that count only when complete, load without unpickling, newest k kept.

Layout of one checkpoint (`ckpt_root/<tag>/`):

    G/<tag>/..., G/latest     DeepSpeed's own files of the G engine: weights + optimizer (partitioned per
    D/<tag>/..., D/latest     rank on ZeRO 1-3). One directory per engine: each writes its own `latest`.
    weights.pt                plain fp32 state dicts {"G", "D", "G_ema"} (gathered on ZeRO-3): what
                              --init-from and export read, without DeepSpeed or a process group
    client_state.pt           the loop's shared state (cur_nimg, tick, ADA p, pl_mean, config hash, ...)
    rank00000.pt, ...         per rank: RNG states (python, numpy, torch, cuda) and the rank's own
                              state (the data loader's position)
    COMPLETE                  JSON written last: tag, world size, stages, precision, serial number,
                              "finite": true (the weights were checked before anything was written)

Tags (checkpoint_tag: "000012.345" for 12 345 images), finding the newest complete and finite
checkpoint, and recovering interrupted replacements: textgan.train.checkpoint_dir.

Everything is written into `ckpt_root/tmp-<tag>/`, flushed, marked COMPLETE, and renamed to
`ckpt_root/<tag>/` (a rename is atomic); then `ckpt_root/latest` is replaced atomically. A crash at any
point leaves either the previous checkpoints untouched or the new one whole. Directories without
COMPLETE are ignored by find_latest and removed by the next save.

Replacing a tag that exists (RUN/best/<metric> on every improvement; a training tag saved twice) takes
two renames, `<tag>` -> `trash-<tag>-<ns>` and `tmp-<tag>` -> `<tag>`; a crash between them is finished
by checkpoint_dir.recover_replacements at the next access.

Finite: save_checkpoint refuses (NonFiniteCheckpointError, naming the tensors) to write weights with a
NaN or inf, before anything is written, so every checkpoint written by this version is finite and says
so in COMPLETE; find_latest never picks a non-finite one (older checkpoints: see checkpoint_dir).

Loading: all our files are read with torch.load(weights_only=True); they hold only tensors, numbers,
strings, lists and dicts. DeepSpeed's load_checkpoint reads its files with weights_only=False; the
engines built by textgan.train.engines replace that with a weights-only load that allows exactly the
three DeepSpeed classes its optimizer files contain (engines.DS_CHECKPOINT_GLOBALS).

save_checkpoint and load_checkpoint are collective: every rank calls them (a shared filesystem is
assumed, as for any multi-node DeepSpeed checkpoint).
"""

import json
import os
import random
import shutil
import time

import numpy as np
import torch

from textgan.atomic import write_text_atomic
from textgan.train.checkpoint_dir import (  # noqa: F401  (checkpoint_tag, tag_nimg: part of this module's API)
    COMPLETE,
    FORMAT,
    LATEST,
    TMP_PREFIX,
    TRASH_PREFIX,
    WEIGHTS_FILE,
    checkpoint_tag,
    complete_checkpoints,
    find_latest,
    load_plain,
    nonfinite_in_checkpoint,
    nonfinite_message,
    nonfinite_tensors,
    read_marker,
    recover_replacements,
    rename_tolerant,
    tag_nimg,
)

CLIENT_FILE = "client_state.pt"
VERSION = 1


def rank_file(rank: int) -> str:
    return f"rank{rank:05d}.pt"


class NonFiniteCheckpointError(RuntimeError):
    """The state to be saved holds NaN or inf; nothing was written."""


# ---------------------------------------------------------------------- RNG states as plain data


def capture_rng() -> dict:
    """This process's RNG states as tensors / numbers (loadable with weights_only=True)."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------- saving


def _check_tag(tag: str) -> str:
    tag = str(tag)
    if not tag or os.sep in tag or tag in (".", "..", LATEST) or tag.startswith((TMP_PREFIX, TRASH_PREFIX)):
        raise ValueError(f"checkpoint tag {tag!r} must be a plain name, not {LATEST!r} or starting with "
                         f"{TMP_PREFIX!r} / {TRASH_PREFIX!r}")
    return tag


def _fsync_tree(path: str) -> None:
    for folder, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _remove_incomplete_and_old(ckpt_root: str, keep: int) -> None:
    complete = complete_checkpoints(ckpt_root)
    keep_paths = {path for _, path in complete[-keep:]}
    for name in os.listdir(ckpt_root):
        path = os.path.join(ckpt_root, name)
        if os.path.isdir(path) and path not in keep_paths:
            shutil.rmtree(path, ignore_errors=True)


_PLAIN = (type(None), bool, int, float, str, torch.Tensor)


def _check_plain(value, where: str) -> None:
    """Refuse at save time what weights_only loading would refuse at resume time."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} must be a str or int")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"{where} is a {type(value).__name__}; checkpoints hold only tensors, numbers, strings, "
                        "lists and dicts (convert it, e.g. OmegaConf.to_container or .state_dict())")


def save_checkpoint(ckpt_root: str, tag: str, engines, client_state: dict, keep: int, rank_state=None) -> str:
    """Write the full state under ckpt_root/<tag>/ (see module docstring); returns that path.
    client_state: the shared state, from rank 0 (tensors, numbers, strings, lists, dicts only).
    rank_state: this rank's own state (e.g. {"loader": loader.state_dict()}), from every rank.
    keep: how many complete checkpoints to keep (>= 1), newest first. Collective."""
    tag = _check_tag(tag)
    _check_plain(dict(client_state), "client_state")
    _check_plain(rank_state or {}, "rank_state")
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (schedule.keep_checkpoints), got {keep}")
    runtime = engines.runtime
    final = os.path.join(ckpt_root, tag)
    tmp = os.path.join(ckpt_root, TMP_PREFIX + tag)

    from textgan.train.engines import (
        full_state_dict,  # here: load_weights must not import deepspeed
    )

    weights = {
        "G": full_state_dict(engines.G.module, engines.G_stage, engines.precision),
        "D": full_state_dict(engines.D.module, engines.D_stage, engines.precision),
        "G_ema": {k: v.detach().cpu().clone() for k, v in engines.G_ema.state_dict().items()},
    }
    # Before anything is written, and decided together: a rank that raised alone would leave the
    # others waiting in the next barrier.
    bad = sorted({name for names in runtime.all_gather_object(nonfinite_tensors(weights)) for name in names})
    if bad:
        raise NonFiniteCheckpointError(
            f"refusing to save checkpoint {tag!r} in {ckpt_root}: {nonfinite_message(bad)}. Nothing was written; "
            "the newest checkpoint there is still the last good state. Lower optim.G_lr / optim.D_lr or set "
            "loss.grad_clip, and resume from it.")
    if runtime.is_main:
        os.makedirs(ckpt_root, exist_ok=True)
        recover_replacements(ckpt_root)  # before tmp- goes: it may be the only whole copy of this tag
        shutil.rmtree(tmp, ignore_errors=True)  # a crashed earlier attempt at this tag
        os.makedirs(tmp)
    runtime.barrier()

    engines.G.save_checkpoint(os.path.join(tmp, "G"), tag=tag)
    engines.D.save_checkpoint(os.path.join(tmp, "D"), tag=tag)
    if runtime.is_main:
        torch.save(weights, os.path.join(tmp, WEIGHTS_FILE))
        torch.save(dict(client_state), os.path.join(tmp, CLIENT_FILE))
    torch.save({"rank": runtime.rank, "rng": capture_rng(), "state": rank_state or {}},
               os.path.join(tmp, rank_file(runtime.rank)))
    runtime.barrier()

    if runtime.is_main:
        _fsync_tree(tmp)
        previous = complete_checkpoints(ckpt_root)
        marker = {
            "format": FORMAT, "version": VERSION, "tag": tag,
            "serial": (previous[-1][0] + 1) if previous else 1,
            "world_size": runtime.world_size, "G_stage": engines.G_stage, "D_stage": engines.D_stage,
            "precision": engines.precision, "saved_at": time.time(), "finite": True,
        }
        write_text_atomic(os.path.join(tmp, COMPLETE), json.dumps(marker, indent=1))
        if os.path.exists(final):  # the same tag again (best/<metric>, a resumed run reaching it): replace it
            rename_tolerant(final, os.path.join(ckpt_root, f"{TRASH_PREFIX}{tag}-{time.time_ns()}"))
        # A crash right here leaves no <tag>: recover_replacements promotes tmp-<tag> at the next access.
        rename_tolerant(tmp, final)
        write_text_atomic(os.path.join(ckpt_root, LATEST), tag)
        _remove_incomplete_and_old(ckpt_root, keep)
    runtime.barrier()
    return final


# ---------------------------------------------------------------------- loading


def load_checkpoint(path: str, engines, rank=None) -> dict:
    """Restore both engines (weights and optimizer states), G_ema and this rank's RNG states from a
    complete checkpoint. Returns the client_state given to save_checkpoint, plus "rank_state": this
    rank's own rank_state. The run must have the world size and ZeRO stages it was saved with (to
    start a different layout from these weights, use load_weights). Collective."""
    runtime = engines.runtime
    rank = runtime.rank if rank is None else rank
    marker = read_marker(path)
    if marker is None:
        raise FileNotFoundError(f"{path} is not a complete textgan checkpoint (no valid {COMPLETE} marker)")
    layout = {"world_size": runtime.world_size, "G_stage": engines.G_stage, "D_stage": engines.D_stage}
    wrong = {k: (marker[k], v) for k, v in layout.items() if marker[k] != v}
    if wrong:
        details = ", ".join(f"{k} {saved} (now {now})" for k, (saved, now) in wrong.items())
        raise ValueError(f"checkpoint {path} was saved with {details}: resume needs the same layout; "
                         "start a new run from its weights with --init-from instead")
    bad = nonfinite_in_checkpoint(path)
    if bad:
        raise ValueError(f"checkpoint {path} is not usable: {nonfinite_message(bad)}; resume from an earlier "
                         "one (--resume auto picks the newest finite checkpoint)")
    tag = marker["tag"]
    for side, engine in (("G", engines.G), ("D", engines.D)):
        loaded, _ = engine.load_checkpoint(os.path.join(path, side), tag=tag, load_optimizer_states=True,
                                           load_lr_scheduler_states=False)
        if loaded is None:
            raise FileNotFoundError(f"DeepSpeed found no {side} checkpoint under {os.path.join(path, side)}")
    engines.G_ema.load_state_dict(load_plain(os.path.join(path, WEIGHTS_FILE))["G_ema"])
    client = dict(load_plain(os.path.join(path, CLIENT_FILE)))
    mine = load_plain(os.path.join(path, rank_file(rank)))
    restore_rng(mine["rng"])
    client["rank_state"] = mine["state"]
    runtime.barrier()
    return client


def load_weights(path: str) -> dict:
    """{"G", "D", "G_ema"} plain fp32 state dicts from a checkpoint directory, a checkpoint root
    (its newest complete checkpoint) or a weights.pt file. Needs neither DeepSpeed nor a process group."""
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, COMPLETE)):
        latest = find_latest(path)
        if latest is None:
            raise FileNotFoundError(f"{path} holds no complete textgan checkpoint")
        path = latest
    file = os.path.join(path, WEIGHTS_FILE) if os.path.isdir(path) else path
    weights = load_plain(file)
    if not isinstance(weights, dict) or not {"G", "D", "G_ema"} <= set(weights):
        raise ValueError(f"{file} is not a textgan weights file (expected the keys G, D, G_ema)")
    bad = nonfinite_tensors({k: weights[k] for k in ("G", "D", "G_ema")})
    if bad:
        raise ValueError(f"{file} is not usable: {nonfinite_message(bad)}; take an earlier checkpoint")
    return weights
