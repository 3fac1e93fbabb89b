"""The newest sample grid of a run: the fakes{tag}.png with the highest kimg in its name.

Training saves a grid at every snapshot as fakes{kimg:06d}.{images:03d}.png (older runs: fakes{kimg:06d}.png),
see textgan/train/checkpoint_dir.py checkpoint_tag. The kimg is read from the name, not the file's mtime: a
copied or restored run directory has mtimes that say nothing about progress.
"""

import os
import re
from typing import Optional, Tuple

_GRID_NAME = re.compile(r"fakes(\d+)(?:\.(\d{3}))?\.png")


def grid_kimg(name: str) -> Optional[float]:
    """kimg of a grid's file name ("fakes000160.500.png" -> 160.5), None for any other name."""
    match = _GRID_NAME.fullmatch(name)
    if match is None:
        return None
    return int(match.group(1)) + int(match.group(2) or 0) / 1000


def latest_grid(run_dir: str) -> Optional[Tuple[str, float]]:
    """(path, kimg) of the run's newest grid, None when it has none."""
    try:
        names = os.listdir(run_dir)
    except OSError:
        return None
    grids = [(kimg, name) for name in names if (kimg := grid_kimg(name)) is not None]
    if not grids:
        return None
    kimg, name = max(grids)
    return os.path.join(run_dir, name), kimg
