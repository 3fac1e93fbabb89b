"""Writing a file so that readers see either the old or the complete new content, never half.

Everything textgan writes that something else reads back (manifests, shard records, run info,
stats.jsonl after a resume truncation, checkpoint pointers, grids, exported generators) goes
through write_bytes_atomic: tmp file, fsync, os.replace, fsync of the directory, tmp removed on
any error. Serialise to bytes first (json, PNG, torch.save into a BytesIO), then call it.
"""

import contextlib
import os

TMP_SUFFIX = ".tmp"


def fsync_dir(path: str) -> None:
    """Make a rename in `path` durable (a crash right after must not undo it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


@contextlib.contextmanager
def removed_on_error(tmp: str):
    """Around writing `tmp` and renaming it into place: on any error (disk full, kill, a bug) `tmp` is
    removed, so nothing half-written is left, and an OSError that names no file (write() errors do not)
    names `tmp`: the user wants to know where."""
    try:
        yield
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename is None:
            e.filename = tmp
        raise


def write_bytes_atomic(path: str, data: bytes, tmp: str | None = None) -> None:
    """Write `data` to `path` via `tmp` (default path + ".tmp"; removed again on any error)."""
    tmp = tmp or path + TMP_SUFFIX
    with removed_on_error(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def write_text_atomic(path: str, text: str) -> None:
    """UTF-8 text; the tmp name carries the pid, so two processes writing the same file (e.g. two
    jobs of a sweep) cannot interleave their tmp files."""
    write_bytes_atomic(path, text.encode("utf-8"), tmp=f"{path}.tmp{os.getpid()}")
