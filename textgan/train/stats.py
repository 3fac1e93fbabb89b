"""Training statistics, StyleGAN style: `report(name, value)` anywhere, reduced once per tick.

StatsCollector accumulates count / sum / sum of squares per name on each rank. Once per tick,
`tick_summary` packs them into one float64 tensor and all-reduces it (one collective, not one per
report), giving every rank the same {"mean", "std", "num"} over all values of all ranks.

StatsWriter (main rank only) turns a tick's summary into one line of `stats.jsonl` and TensorBoard
scalars; it also logs sample grids, text and hparams. On resume it cuts both logs back to the
checkpoint, so an interrupted + resumed run leaves the same stats.jsonl as an uninterrupted one.

Names: 'Loss/G/adv', 'Loss/D/r1', ... Timing and machine-dependent values go under 'Timing/' and
'Resources/' (TIMING_PREFIXES), so a test can compare every other key exactly between two runs.

Nothing here imports torch.distributed: the Runtime passes its collectives in as functions.
"""

import json
import math
import os
import time
from typing import Callable, Dict, Optional

import numpy as np
import torch

from textgan.atomic import write_text_atomic

STATS_FILE = "stats.jsonl"
TIMING_PREFIXES = ("Timing/", "Resources/")
PROGRESS_TICK = "Progress/tick"
PROGRESS_KIMG = "Progress/kimg"
TIMESTAMP = "timestamp"

Summary = Dict[str, Dict[str, float]]


def is_deterministic_key(name: str) -> bool:
    """True for the stats.jsonl keys that two identical runs must reproduce exactly."""
    return name != TIMESTAMP and not name.startswith(TIMING_PREFIXES)


class StatsCollector:
    """Per-rank accumulator of reported values.

    device: where tensor values accumulate. Use the training device: values reported from the GPU
    then stay there (no host sync per report) until the tick's single reduction. Python numbers
    accumulate on the host in float64 and join the tensors at the end of the tick.
    """

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self._tensor_moments: Dict[str, torch.Tensor] = {}  # name -> float64 [count, sum, sumsq]
        self._host_moments: Dict[str, list] = {}  # name -> [count, sum, sumsq] as python floats

    def report(self, name: str, value) -> None:
        """Add a value: a number, or a tensor / array of any shape (every element counts once).
        An empty tensor registers the name with no values."""
        if isinstance(value, (bool, int, float, np.integer, np.floating)):
            moments = self._host_moments.setdefault(name, [0.0, 0.0, 0.0])
            value = float(value)
            moments[0] += 1.0
            moments[1] += value
            moments[2] += value * value
            return
        elems = torch.as_tensor(value).detach().flatten().to(device=self.device, dtype=torch.float64)
        # ones_like().sum() rather than numel(): no host->device copy per report
        moments = torch.stack([torch.ones_like(elems).sum(), elems.sum(), elems.square().sum()])
        if name in self._tensor_moments:
            self._tensor_moments[name] += moments
        else:
            self._tensor_moments[name] = moments

    def names(self) -> list:
        return sorted(set(self._tensor_moments) | set(self._host_moments))

    def reset(self) -> None:
        self._tensor_moments.clear()
        self._host_moments.clear()

    def state_dict(self) -> dict:
        """What was reported since the last summary, as plain data (a checkpoint taken mid-tick keeps it,
        so the resumed tick's summary equals an uninterrupted one's)."""
        return {"tensor": {k: v.detach().cpu().clone() for k, v in self._tensor_moments.items()},
                "host": {k: list(v) for k, v in self._host_moments.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._tensor_moments = {k: v.to(device=self.device, dtype=torch.float64) for k, v in state["tensor"].items()}
        self._host_moments = {k: [float(x) for x in v] for k, v in state["host"].items()}

    def _packed(self, names: list) -> torch.Tensor:
        """float64 [len(names), 3] of this rank's moments; zeros for names it never reported."""
        packed = torch.zeros([len(names), 3], dtype=torch.float64, device=self.device)
        for row, name in enumerate(names):
            if name in self._tensor_moments:
                packed[row] += self._tensor_moments[name]
            if name in self._host_moments:
                packed[row] += torch.tensor(self._host_moments[name], dtype=torch.float64, device=self.device)
        return packed

    def tick_summary(
        self,
        reduce_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        all_gather_object_fn: Optional[Callable[[object], list]] = None,
    ) -> Summary:
        """{name: {"mean", "std", "num"}} over everything reported since the last summary, then reset.

        Multi-rank: reduce_fn(tensor) -> the elementwise sum of that tensor over all ranks (e.g.
        all_reduce SUM; a function that reduces in place and returns None is accepted too), and
        all_gather_object_fn(obj) -> [obj of rank 0, obj of rank 1, ...].
        Ranks may report different names (a rank that skipped a corrupt sample reports a skip the
        others did not), and all_reduce needs identical shapes and order on every rank; so the
        union of all ranks' names is gathered first and packed in sorted order. Every rank must
        call this at the same point (it is collective). std is the population std (StyleGAN's).
        Names with no values on any rank are left out.
        """
        names = self.names()
        if reduce_fn is not None:
            if all_gather_object_fn is None:
                raise ValueError("tick_summary(reduce_fn=...) also needs all_gather_object_fn to agree on names")
            names = sorted(set().union(*all_gather_object_fn(names)))
        packed = self._packed(names)
        if reduce_fn is not None and names:
            reduced = reduce_fn(packed)
            packed = packed if reduced is None else reduced
        self.reset()
        summary = {}
        for name, (count, total, total_sq) in zip(names, packed.cpu().tolist()):
            if count == 0:
                continue
            mean = total / count
            summary[name] = {"num": int(count), "mean": mean, "std": math.sqrt(max(total_sq / count - mean * mean, 0.0))}
        return summary


def _nimg(kimg: float) -> int:
    """TensorBoard step and the exact resume comparison use integer image counts."""
    return int(round(float(kimg) * 1000))


def _json_safe(value: float):
    # NaN/inf are not JSON; null keeps stats.jsonl readable by strict parsers (jq, pandas)
    return value if math.isfinite(value) else None


def truncate_stats(path: str, resume_kimg: float) -> int:
    """Keep the lines of stats.jsonl up to and including resume_kimg, drop later ones (and a torn last
    line from a crash mid-write); rewrite atomically. Returns the number of lines kept."""
    if not os.path.exists(path):
        return 0
    limit = _nimg(resume_kimg)
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
                kimg = entry[PROGRESS_KIMG]["mean"]
            except (ValueError, KeyError, TypeError):
                break  # torn write: nothing after it can be trusted either
            if _nimg(kimg) > limit:
                break
            kept.append(line if line.endswith("\n") else line + "\n")
    write_text_atomic(path, "".join(kept))
    return len(kept)


def hparam_value(value):
    """TensorBoard hparams accept numbers, strings and bools; show anything else (None, lists) as text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def flatten_hparams(tree: dict, prefix: str = "") -> dict:
    """{"loss": {"r1_gamma": 1}} -> {"loss.r1_gamma": 1}: the dotted keys that --set uses."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_hparams(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = hparam_value(value)
    return flat


class StatsWriter:
    """stats.jsonl + TensorBoard for one run directory. Every method is a no-op when not enabled
    (pass enabled=runtime.is_main), so the loop calls it on every rank without branching.

    All progress arguments are in kimg (StyleGAN's unit); TensorBoard's global_step is cur_nimg.
    resume_kimg: the kimg of the checkpoint being resumed. stats.jsonl loses its lines after it, and
    TensorBoard purges events after it, so the resumed run's ticks are not logged twice. None: a new
    run (nothing is cut). Write a tick's line before saving that tick's checkpoint, so that a crash
    between the two can only lose a checkpoint, never a line the checkpoint claims.
    """

    def __init__(self, run_dir: str, enabled: bool = True, resume_kimg: Optional[float] = None,
                 tensorboard: bool = True):
        self.run_dir = run_dir
        self.enabled = enabled
        self.path = os.path.join(run_dir, STATS_FILE)
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        if resume_kimg is not None:
            truncate_stats(self.path, resume_kimg)
        self._jsonl = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import (
                SummaryWriter,  # imports tensorboard: main rank only
            )

            purge_step = None if resume_kimg is None else _nimg(resume_kimg) + 1
            self._tb = SummaryWriter(log_dir=run_dir, purge_step=purge_step)

    def append(self, tick: int, kimg: float, summary: Summary, timestamp: Optional[float] = None) -> dict:
        """Write one tick: a stats.jsonl line (flushed and fsynced: it must survive a kill right after)
        and a TensorBoard scalar (the mean) per name. Returns the line's dict."""
        timestamp = time.time() if timestamp is None else timestamp
        entry = {
            PROGRESS_TICK: {"num": 1, "mean": float(tick), "std": 0.0},
            PROGRESS_KIMG: {"num": 1, "mean": float(kimg), "std": 0.0},
        }
        for name in sorted(summary):
            stat = summary[name]
            entry[name] = {"num": int(stat["num"]), "mean": _json_safe(stat["mean"]), "std": _json_safe(stat["std"])}
        entry[TIMESTAMP] = timestamp
        if not self.enabled:
            return entry
        self._jsonl.write(json.dumps(entry) + "\n")
        self._jsonl.flush()
        os.fsync(self._jsonl.fileno())
        if self._tb is not None:
            step = _nimg(kimg)
            for name, stat in entry.items():
                if name != TIMESTAMP and stat["mean"] is not None:
                    self._tb.add_scalar(name, stat["mean"], global_step=step, walltime=timestamp)
            self._tb.flush()
        return entry

    def add_image_grid(self, name: str, image, kimg: float) -> None:
        """A sample grid: a PNG path, a uint8 array [H, W, 3] (what grids.save_grid returns),
        or a uint8 tensor [3, H, W]."""
        if self._tb is None:
            return
        if isinstance(image, (str, os.PathLike)):
            from PIL import Image

            with Image.open(image) as img:
                image = np.asarray(img.convert("RGB"))
        if isinstance(image, np.ndarray):
            self._tb.add_image(name, image, global_step=_nimg(kimg), dataformats="HWC")
        else:
            self._tb.add_image(name, image, global_step=_nimg(kimg), dataformats="CHW")
        self._tb.flush()

    def add_scalar(self, name: str, value: float, kimg: float) -> None:
        """A value outside the per-tick stats (e.g. a metric measured at snapshots)."""
        if self._tb is not None:
            self._tb.add_scalar(name, float(value), global_step=_nimg(kimg))
            self._tb.flush()

    def add_text(self, name: str, text: str, kimg: float) -> None:
        if self._tb is not None:
            self._tb.add_text(name, text, global_step=_nimg(kimg))

    def add_hparams(self, hparams: dict, metrics: Dict[str, float], kimg: float) -> None:
        """Sweep comparison: hparams (nested config dict allowed; flattened to dotted keys) with
        metric values. Written into this run's own event files (not a sub-run, as SummaryWriter's
        add_hparams would do), so TensorBoard's HParams view links to the run's curves. The metrics
        are also logged as scalars at kimg: use names not logged otherwise (e.g. 'HParams/fid10k')."""
        if self._tb is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        if not isinstance(hparams, dict):  # a config node
            from omegaconf import OmegaConf

            hparams = OmegaConf.to_container(hparams, resolve=True)
        step = _nimg(kimg)
        writer = self._tb._get_file_writer()
        for summary in hparams_summaries(flatten_hparams(hparams), dict(metrics)):
            writer.add_summary(summary, step)
        for name, value in metrics.items():
            self._tb.add_scalar(name, value, global_step=step)
        self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
