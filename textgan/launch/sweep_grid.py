"""Sweep grids: a YAML file of `key: [values]` expanded into points, each a set of config overrides.

    # configs/sweeps/NAME.yaml
    grid:                       # cartesian product, in file order (the last key varies fastest)
      loss.r1_gamma: [1, 10]
      model.size: [0.5, 1.0]
    fixed:                      # optional: overrides shared by every point
      schedule.total_kimg: 2000

    points = expand_grid(load_grid("configs/sweeps/NAME.yaml"))
    points[0].name       -> "000-r1_gamma=1-size=0.5"  (its run directory inside the sweep directory)
    points[0].overrides  -> ["schedule.total_kimg=2000", "loss.r1_gamma=1", "model.size=0.5"]
"""

import dataclasses
import itertools
import os
from typing import Dict, List

import yaml
from omegaconf import Container, OmegaConf

from textgan.config import read_yaml
from textgan.errors import UsageError
from textgan.train.rundir import sanitize_desc


@dataclasses.dataclass
class Grid:
    path: str
    grid: Dict[str, list]
    fixed: Dict[str, object]

    @property
    def name(self) -> str:
        """The grid file's name, made safe for directory and Slurm job names (like a run's desc)."""
        return sanitize_desc(os.path.splitext(os.path.basename(self.path))[0])


@dataclasses.dataclass
class Point:
    index: int
    name: str
    values: Dict[str, object]  # the swept keys and this point's values
    overrides: List[str]  # fixed + swept, as --set KEY=VALUE strings

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _override_value(value) -> str:
    """A value as an OmegaConf dotlist override parses it back (YAML flow style: 0.5, true, null, ada)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("\n...").strip()


def load_grid(path: str) -> Grid:
    loaded = read_yaml(path, "grid file", " (see configs/sweeps/ for examples)")
    data = OmegaConf.to_container(loaded, resolve=False) if isinstance(loaded, Container) else loaded
    if not isinstance(data, dict) or not isinstance(data.get("grid"), dict) or not data["grid"]:
        raise UsageError(f"grid file {path} needs a 'grid:' mapping of config keys to lists of values, e.g.\n"
                         "grid:\n  loss.r1_gamma: [1, 10]")
    unknown = set(data) - {"grid", "fixed"}
    if unknown:
        raise UsageError(f"grid file {path}: unknown top-level key(s) {sorted(unknown)}; allowed: grid, fixed")
    grid = {}
    for key, values in data["grid"].items():
        if not isinstance(values, list) or not values:
            raise UsageError(f"grid file {path}: '{key}' must map to a non-empty list of values, e.g. [0.5, 1.0]")
        if len({_override_value(v) for v in values}) != len(values):
            raise UsageError(f"grid file {path}: '{key}' lists a value twice: {values}")
        grid[str(key)] = values
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise UsageError(f"grid file {path}: 'fixed' must be a mapping of config keys to values")
    both = set(grid) & set(fixed)
    if both:
        raise UsageError(f"grid file {path}: {sorted(both)} both swept and fixed")
    return Grid(path=path, grid=grid, fixed={str(k): v for k, v in fixed.items()})


def short_names(keys: List[str]) -> Dict[str, str]:
    """The last component of each dotted key ('contrastive.C_it' -> 'C_it'), or the whole key where two
    keys would share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def expand_grid(grid: Grid) -> List[Point]:
    keys = list(grid.grid)
    short = short_names(keys)
    fixed = [f"{k}={_override_value(v)}" for k, v in grid.fixed.items()]
    points = []
    for index, combo in enumerate(itertools.product(*(grid.grid[k] for k in keys))):
        values = dict(zip(keys, combo))
        label = "-".join(f"{short[k]}={_override_value(v)}" for k, v in values.items())
        points.append(Point(index=index, name=sanitize_desc(f"{index:03d}-{label}"), values=values,
                            overrides=fixed + [f"{k}={_override_value(v)}" for k, v in values.items()]))
    return points
