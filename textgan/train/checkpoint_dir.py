"""Reading a checkpoint root: tags, which checkpoints are complete and finite, the newest one, and
finishing a replacement that a crash interrupted. textgan.train.checkpoint writes what this reads
(its docstring shows the layout); everything here works without DeepSpeed or a process group.

Tags: checkpoint_tag(cur_nimg) names the training checkpoints by images, "000012.345" for 12 345
images (unique per save even with kimg_per_tick < 1); older versions wrote whole kimg ("000012").
tag_nimg reads both, for ordering by progress. A best/<metric> checkpoint is tagged with the metric.

Complete: a directory counts only with a valid COMPLETE marker, written last; `tmp-` and `trash-`
directories never count.

Finite: every checkpoint this version writes was checked before anything was written and its
COMPLETE says "finite": true, so find_latest trusts it for free. For a checkpoint of an older version
(no "finite") find_latest reads its weights.pt once (G, D and G_ema in fp32: a few seconds for the
largest recipes) and passes over it if it holds NaN or inf.

Interrupted replacements: replacing a tag that exists (RUN/best/<metric> on every improvement; a
training tag saved twice) takes two renames, `<tag>` -> `trash-<tag>-<ns>` and `tmp-<tag>` -> `<tag>`.
A crash between them leaves no `<tag>`; recover_replacements (run by find_latest, read_best and every
save) then promotes the complete `tmp-<tag>` or, failing that, renames the newest trash copy back.
"""

import json
import os
import re

import torch

from textgan.atomic import write_text_atomic

COMPLETE = "COMPLETE"
LATEST = "latest"
WEIGHTS_FILE = "weights.pt"
TMP_PREFIX = "tmp-"
TRASH_PREFIX = "trash-"
FORMAT = "textgan-checkpoint"


# ---------------------------------------------------------------------- tags


def checkpoint_tag(cur_nimg: int) -> str:
    """The tag of the training checkpoint saved at cur_nimg: kimg with the images after the point,
    "000012.345" for 12 345 images. Every save of a run has its own tag (two saves at one cur_nimg hold
    the same state), it reads like the kimg in the logs, and as text it sorts in progress order (up to
    999 999 kimg), also next to the whole-kimg tags of older versions ("000012" before "000012.345")."""
    cur_nimg = int(cur_nimg)
    if cur_nimg < 0:
        raise ValueError(f"cur_nimg must be >= 0, got {cur_nimg}")
    return f"{cur_nimg // 1000:06d}.{cur_nimg % 1000:03d}"


_PROGRESS_TAG = re.compile(r"(\d+)(?:\.(\d{3}))?")


def tag_nimg(tag: str):
    """Images of a progress tag, the key to sort checkpoints by progress: "000012.345" -> 12345; an
    older whole-kimg tag "000012" -> 12000 (that save was somewhere in kimg 12). None for other tags
    (e.g. a best/<metric> checkpoint)."""
    match = _PROGRESS_TAG.fullmatch(os.path.basename(str(tag)))
    if match is None:
        return None
    return int(match.group(1)) * 1000 + int(match.group(2) or 0)


# ---------------------------------------------------------------------- finding checkpoints


def read_marker(path: str):
    try:
        with open(os.path.join(path, COMPLETE)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == FORMAT else None


def complete_checkpoints(ckpt_root: str) -> list:
    """[(serial, path)] of the complete checkpoints under ckpt_root, oldest first."""
    if not os.path.isdir(ckpt_root):
        return []
    found = []
    for name in os.listdir(ckpt_root):
        path = os.path.join(ckpt_root, name)
        if name.startswith((TMP_PREFIX, TRASH_PREFIX)) or not os.path.isdir(path):
            continue
        marker = read_marker(path)
        if marker is not None:
            found.append((int(marker["serial"]), path))
    return sorted(found)


def find_latest(ckpt_root: str):
    """Path of the newest complete and finite checkpoint under ckpt_root, or None. The `latest`
    pointer wins when it names one; otherwise the highest serial number. An interrupted replacement
    is recovered first (recover_replacements)."""
    recover_replacements(ckpt_root)
    try:
        with open(os.path.join(ckpt_root, LATEST)) as f:
            name = f.read().strip()
    except OSError:
        name = ""
    candidates = [path for _, path in reversed(complete_checkpoints(ckpt_root))]
    if name and os.sep not in name and name not in (".", ".."):
        pointed = os.path.join(ckpt_root, name)
        if read_marker(pointed) is not None:
            candidates.insert(0, pointed)
    return next((path for path in candidates if not nonfinite_in_checkpoint(path)), None)


def nonfinite_tensors(weights: dict) -> list:
    """Names ("G.net.4.running_var") of the floating tensors with a NaN or inf in {"G": state dict,
    "D": ..., "G_ema": ...}."""
    return [f"{net}.{name}" for net, state in weights.items() for name, t in state.items()
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def nonfinite_in_checkpoint(path: str) -> list:
    """The non-finite tensors of a complete checkpoint ([] when finite). Free for checkpoints whose
    COMPLETE says "finite" (checked at save); an older one's weights.pt is read. A weights.pt that
    cannot be read proves nothing here ([]): loading reports the damage."""
    marker = read_marker(path) or {}
    if marker.get("finite") is True:
        return []
    try:
        weights = load_plain(os.path.join(path, WEIGHTS_FILE))
    except Exception:  # missing, truncated, not ours: whatever torch.load raises
        return []
    return nonfinite_tensors(weights) if isinstance(weights, dict) else []


def nonfinite_message(bad: list) -> str:
    shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
    return f"{len(bad)} tensor(s) hold NaN or inf: {shown}"


# ---------------------------------------------------------------------- interrupted replacements


def rename_tolerant(src: str, dst: str) -> bool:
    """os.rename that tolerates another process having done the same rename first (every rank may
    recover at once, and a reader may recover while the writer finishes its own save)."""
    try:
        os.rename(src, dst)
        return True
    except OSError:
        if os.path.exists(src) and not os.path.exists(dst):
            raise
        return False


def recover_replacements(ckpt_root: str) -> list:
    """Finish replacements that a crash cut between their two renames (see module docstring): for each
    tag with a `trash-<tag>-*` copy and no `<tag>`, promote a complete `tmp-<tag>`, else rename the
    newest complete trash copy back. Returns the tags restored. Idempotent and safe to run from several
    processes at once. Anything else is left alone (the next save prunes it)."""
    if not os.path.isdir(ckpt_root):
        return []
    names = set(os.listdir(ckpt_root))
    trashed = {}
    for name in names:
        if name.startswith(TRASH_PREFIX):
            tag, _, stamp = name[len(TRASH_PREFIX):].rpartition("-")
            if tag and stamp.isdigit():
                trashed.setdefault(tag, []).append((int(stamp), name))
    restored = []
    for tag, copies in sorted(trashed.items()):
        final = os.path.join(ckpt_root, tag)
        if os.path.exists(final):
            continue
        tmp = os.path.join(ckpt_root, TMP_PREFIX + tag)
        sources = [tmp] + [os.path.join(ckpt_root, name) for _, name in sorted(copies, reverse=True)]
        source = next((path for path in sources if read_marker(path) is not None), None)
        if source is not None:
            rename_tolerant(source, final)
            restored.append(tag)
    if restored:
        newest = complete_checkpoints(ckpt_root)
        if newest and os.path.basename(newest[-1][1]) in restored:
            write_text_atomic(os.path.join(ckpt_root, LATEST), os.path.basename(newest[-1][1]))
    return restored


# ---------------------------------------------------------------------- plain files


def load_plain(path: str):
    """torch.load of one of our checkpoint files: tensors, numbers, strings, lists, dicts only."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file {path} is missing; the checkpoint is damaged")
    return torch.load(path, map_location="cpu", weights_only=True)
