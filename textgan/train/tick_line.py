"""The one log line per tick, StyleGAN style, and the timing values it adds to stats.jsonl.

    tick 12     kimg 48.0/25000.0     time 1h 02m 03s   sec/kimg 12.34    eta 3d 13h       mem 5.21 GB
    augment 0.123  G 1.123  D_real 0.715  D_fake 0.509  R1 0.0094  contrastive 2.345  nonfinite_skips 2
(one line in the log; wrapped here)

Columns, always in this order: tick; kimg / total_kimg; time, the run's elapsed wall time summed over
all its attempts (the checkpoint's client state carries it as "elapsed_sec"); sec/kimg of this tick;
eta; peak memory (Resources/peak_mem_gb: CUDA max allocated on a GPU, process max RSS on the CPU; the
mean over ranks); augment (ADA's p, only when augment.kind=ada); the losses G, D_real, D_fake, R1 (with
loss.kind=rpgan D, the paired loss, in place of D_real and D_fake), R2 (only when R2 is on);
contrastive (G's weighted contrastive total, only when contrastive terms are on); nonfinite_skips
(phases skipped this tick, only when any were).

ETA = remaining kimg x this tick's sec/kimg: the most recent speed, so it follows a run whose speed
changes (metrics ticks, a resume on other hardware) but jumps on a tick that ran metrics.
Timing values live under 'Timing/' so the exact resume comparisons of stats.jsonl ignore them.
"""

import math

ELAPSED = "Timing/elapsed_sec"
ETA = "Timing/eta_sec"


def format_duration(seconds) -> str:
    """Human-readable, StyleGAN's format_time: '42s', '5m 07s', '1h 02m 03s', '2d 04h'; '-' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s // 60 % 60:02d}m {s % 60:02d}s"
    return f"{s // 86400}d {s // 3600 % 24:02d}h"


def eta_seconds(cur_nimg: int, total_nimg: int, sec_per_kimg: float) -> float:
    """Seconds left at the given speed: remaining kimg x sec/kimg (0 when done)."""
    return max(total_nimg - cur_nimg, 0) / 1000 * sec_per_kimg


def timing_entries(elapsed_sec: float, cur_nimg: int, total_nimg: int, summary: dict) -> dict:
    """Summary entries ({"num", "mean", "std"}) for the run's elapsed time and its ETA, computed from the
    reduced summary's sec/kimg, so every rank gets the same values."""
    sec_per_kimg = _mean(summary, "Timing/sec_per_kimg")
    return {ELAPSED: _entry(elapsed_sec), ETA: _entry(eta_seconds(cur_nimg, total_nimg, sec_per_kimg))}


def kimg_decimals(kimg_per_tick: float) -> int:
    """Decimals that show every tick's kimg distinctly: 1 (StyleGAN's) unless ticks are under 1 kimg."""
    return 1 if kimg_per_tick >= 1 else 3


def tick_line(tick: int, cur_nimg: int, total_nimg: int, summary: dict, decimals: int = 1, world_size: int = 1) -> str:
    """The tick's log line from its summary ({name: {"mean", ...}}, with timing_entries merged in).
    world_size: every rank reports the same skips (they are agreed), so the summed count is divided by it."""
    total = f"{total_nimg / 1000:.{decimals}f}"
    kimg = f"{cur_nimg / 1000:.{decimals}f}/{total}"
    fields = [
        f"tick {tick:<5d}",
        f"kimg {kimg:<{2 * len(total) + 1}}",
        f"time {format_duration(_mean(summary, ELAPSED)):<11}",
        f"sec/kimg {_mean(summary, 'Timing/sec_per_kimg'):<7.2f}",
        f"eta {format_duration(_mean(summary, ETA)):<11}",
        f"mem {_mean(summary, 'Resources/peak_mem_gb'):.2f} GB",
    ]
    if "Progress/augment_p" in summary:
        fields.append(f"augment {_mean(summary, 'Progress/augment_p'):.3f}")
    fields.append(f"G {_mean(summary, 'Loss/G/adv'):.3f}")
    if "Loss/D/adv_real" not in summary and "Loss/D/adv" in summary:  # loss.kind=rpgan: one loss per pair
        fields.append(f"D {_mean(summary, 'Loss/D/adv'):.3f}")
    else:
        fields += [f"D_real {_mean(summary, 'Loss/D/adv_real'):.3f}", f"D_fake {_mean(summary, 'Loss/D/adv_fake'):.3f}"]
    fields.append(f"R1 {_mean(summary, 'Loss/D/r1'):.4f}")
    if "Loss/D/r2" in summary:
        fields.append(f"R2 {_mean(summary, 'Loss/D/r2'):.4f}")
    if "Loss/G/contrastive/total" in summary:
        fields.append(f"contrastive {_mean(summary, 'Loss/G/contrastive/total'):.3f}")
    skips = summary.get("Health/nonfinite_skips", {})
    skipped = round((skips.get("mean") or 0.0) * skips.get("num", 0) / world_size)  # sum over iterations
    if skipped:
        fields.append(f"nonfinite_skips {skipped}")
    return "  ".join(fields)


def _entry(value: float) -> dict:
    return {"num": 1, "mean": float(value), "std": 0.0}


def _mean(summary: dict, key: str) -> float:
    value = summary.get(key, {}).get("mean")
    return float("nan") if value is None else value
