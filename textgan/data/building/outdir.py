"""The output directory of a build: which files are ours, and whether a rerun may resume.

OUT/build_settings.json is written before any shard. It holds the settings fingerprint:
everything that changes the bytes of the shards. A rerun with the same fingerprint resumes;
a different one is refused unless --overwrite, which deletes only files this builder writes
(shards, shard records, manifests, the settings file, their *.tmp), never anything else.
"""

import errno
import os
import re

from textgan.data import format as fmt
from textgan.data.manifest import (BUILD_SETTINGS_NAME, read_json, settings_path, write_bytes_atomic,
                                   dumps)
from textgan.errors import UsageError

_SHARD_RE = re.compile(r"^(?:%s)-(?:p(\d{3})-)?\d{6}\.tar$" % "|".join(fmt.SPLITS))
_PART_MANIFEST_RE = re.compile(r"^manifest\.part-(\d{3})-of-\d{3}\.json$")


def _base_name(name: str) -> str:
    if name.endswith(fmt.TMP_SUFFIX):
        name = name[: -len(fmt.TMP_SUFFIX)]
        # settings are written with a per-process tmp name (parts may start together)
        if name.startswith(BUILD_SETTINGS_NAME + "."):
            return BUILD_SETTINGS_NAME
    if name.endswith(fmt.SHARD_RECORD_SUFFIX):
        name = name[: -len(fmt.SHARD_RECORD_SUFFIX)]
    return name


def owner_part(name: str):
    """For a file this builder writes: its part (0 for unsplit builds), or "all" for files
    shared by all parts (manifest.json, build_settings.json); None for files not ours."""
    base = _base_name(name)
    if base in (fmt.MANIFEST_NAME, BUILD_SETTINGS_NAME):
        return "all"
    m = _SHARD_RE.match(base) or _PART_MANIFEST_RE.match(base)
    if m:
        return int(m.group(1) or 0)
    return None


def our_files(out_dir: str, part=None) -> list:
    """Names of files in out_dir written by this builder (only those of `part` when given)."""
    if not os.path.isdir(out_dir):
        return []
    names = []
    for name in sorted(os.listdir(out_dir)):
        owner = owner_part(name)
        if owner is not None and (part is None or owner == part):
            names.append(name)
    return names


def remove_files(out_dir: str, names) -> None:
    for name in names:
        try:
            os.remove(os.path.join(out_dir, name))
        except FileNotFoundError:
            pass


def remove_stale_tmp(out_dir: str, part: int, num_parts: int) -> list:
    """Delete the *.tmp an interrupted run of this part left (never counted as done).
    Only this part's: another part may be writing its own tmp files right now."""
    stale = [n for n in our_files(out_dir) if n.endswith(fmt.TMP_SUFFIX)
             and (num_parts == 1 or owner_part(n) == part)]
    remove_files(out_dir, stale)
    return stale


def differing_keys(old: dict, new: dict, prefix: str = "") -> list:
    """Dotted names of the keys whose values differ (recursing into dicts)."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            keys += differing_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def describe_os_error(e: OSError) -> str:
    """What went wrong, in words a user acts on."""
    code = e.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        what = "no space left on the device" if code == errno.ENOSPC else "disk quota exceeded"
        return f"{what} (the disk is full)"
    if code == errno.EROFS:
        return "the file system is read-only"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if code in (errno.ENOTDIR, errno.EEXIST):
        return "a path component is a file, not a directory"
    return e.strerror or str(e)


def prepare_out_dir(out_dir: str, fingerprint: dict, *, overwrite: bool, part: int, num_parts: int) -> str:
    """Make out_dir ready for this build; returns "new", "resume" or "overwrite".

    UsageError (exit 2, nothing touched) when out_dir cannot be used: it is a file, cannot
    be created or written, or holds a build with other settings and --overwrite is not given.
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--outdir {out_dir} exists and is not a directory; choose a directory path.")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output directory {out_dir}: {describe_os_error(e)}. "
                         "Choose a writable --outdir.") from None
    path = settings_path(out_dir)
    try:
        old = read_json(path) if os.path.exists(path) else None
    except (OSError, ValueError):
        old = {"unreadable": True}
    existing = [n for n in our_files(out_dir) if n != BUILD_SETTINGS_NAME]
    state = "new"
    if old is not None and old != fingerprint or old is None and existing:
        if not overwrite:
            if old is None:
                why = f"it holds shard files ({', '.join(existing[:3])}...) but no {BUILD_SETTINGS_NAME}"
            else:
                why = f"it was built with other settings (differing: {', '.join(differing_keys(old, fingerprint))})"
            raise UsageError(f"refusing to write into {out_dir}: {why}. Pass --overwrite to rebuild it "
                             "with the new settings (deletes its shards and manifests), or choose another --outdir.")
        remove_files(out_dir, our_files(out_dir))
        state = "overwrite"
    elif old is not None and overwrite:
        # Same settings: rebuild this part only (other parts of a split build stay).
        remove_files(out_dir, our_files(out_dir, part=part if num_parts > 1 else None))
        if num_parts > 1:
            remove_files(out_dir, [fmt.MANIFEST_NAME])
        state = "overwrite"
    elif old is not None:
        state = "resume"
    if old != fingerprint or state == "overwrite":
        try:
            # A per-process tmp name: the K parts of an array job may all write it at once.
            write_bytes_atomic(path, dumps(fingerprint), tmp=f"{path}.{os.getpid()}{fmt.TMP_SUFFIX}")
        except OSError as e:
            raise UsageError(f"cannot write into the output directory {out_dir}: {describe_os_error(e)}. "
                             "Choose a writable --outdir (or free space and rerun).") from None
    return state
