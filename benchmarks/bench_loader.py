"""Streaming loader throughput against a plain PIL loop over the same JPEG files.

Both produce uint8 RGB pixels (the loader's batches carry them; the conversion to floats in [-1, 1] runs
on the training device); the loader also reads tars, parses json, picks captions and builds batches,
with W DataLoader worker processes. The goal for W workers is W x 0.8 the plain loop's samples/s.

Steady state on both sides: each measurement handles more samples than the 1500 files (3072 at 64 px,
2048 at 256 px: the PIL loop goes over the files again; the loader is infinite), and the loader's clock
starts only once every worker has delivered and the batches they prefetched while starting are used up,
so neither worker start-up nor a burst of ready batches counts. With 1500 samples and the first batch as
the only warm-up, 2 workers' runs lasted ~0.2 s at 64 px and started with ~4 prefetched batches, a few
percent of the count in the rate's favour. (The sizes keep the whole benchmark near a minute.)

The machine is shared (and a virtual machine whose host may take CPU time away: steal): wall-clock rates move
with other load, which W workers feel more than one PIL process does (2 workers and the main process on 2
cores). So the notes give, next to the wall-clock ratios, each process's CPU time per sample, where a
worker's time goes, and how contended the machine was.
"""

import itertools
import json
import os
import shutil
import tarfile
import tempfile
import time

import numpy as np
from PIL import Image
from common import coco_like_folder
from harness import Result, interleaved

from textgan.data.building.cli import main as build
from textgan.data.decode import decode_jpeg_into
from textgan.data.loading.loader import train_loader
from textgan.data.loading.samples import SampleDecoder, SkipCounter, choose_captions, collate, read_shard
from textgan.data.sample_fields import sample_captions, sample_image_id

BATCH = 32
# Recorded once (not re-measured by this benchmark): what a profile of a worker (py-spy, cProfile, each piece
# timed alone) showed before the loader decoded into shared-memory slots and skipped Image.open's parsing.
PROFILE_BEFORE = (
    "profile before the 2026-12-01 changes, CPU us per sample at 64 / 256 px (the PIL loop: 142 / 536): JPEG "
    "decode 126 / 589, of which Image.open's header parsing in Python ~50 / ~50 and two needless copies; tar "
    "reading 20 / 23 (half of it header checksums summed in Python); json 4 / 4; caption choice 2 / 2; stacking "
    "the batch 8 / 63; moving its pixels to the main process (a new shared-memory segment per batch, every page "
    "faulted on both sides) ~14 / ~110 in the worker and ~14 / ~38 in the main process. After: decode 71 / 467, "
    "tar 13 / 15, batch building 0.3, pixels ~2 in the worker and 2-4 in the main process"
)
PREFETCH_FACTOR = 2  # DataLoader's default, which the loader keeps
_TICK = os.sysconf("SC_CLK_TCK")


def _extract_jpegs(shard_dir: str, dest: str) -> list:
    os.makedirs(dest, exist_ok=True)
    paths = []
    for name in sorted(os.listdir(shard_dir)):
        if name.endswith(".tar"):
            with tarfile.open(os.path.join(shard_dir, name)) as tar:
                for member in tar.getmembers():
                    if member.name.endswith(".jpg"):
                        path = os.path.join(dest, os.path.basename(member.name))
                        with open(path, "wb") as f:
                            f.write(tar.extractfile(member).read())
                        paths.append(path)
    return paths


class _Cpu:
    """CPU seconds per sample of the last measurements, for the notes."""

    def __init__(self):
        self.per_sample = {}

    def record(self, name: str, seconds: float, samples: int) -> None:
        self.per_sample.setdefault(name, []).append(seconds / samples)

    def us(self, name: str) -> float:
        values = sorted(self.per_sample[name])
        return 1e6 * values[len(values) // 2]


def _machine_times() -> list:
    """The machine's CPU time counters (/proc/stat's first line: user, nice, system, idle, iowait, irq, softirq,
    steal, ...), to tell how much CPU other processes and other virtual machines (steal) took during the run."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:9]]


def _contention_note(start: list, load_start: float) -> str:
    delta = [b - a for a, b in zip(start, _machine_times())]
    total = sum(delta) or 1
    return (f"contention: load average (1 min) {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
            f"CPU steal (time the hypervisor gave other virtual machines) {100 * delta[7] / total:.0f}% of the run. "
            "Both move the wall-clock ratios (2 workers and the main process need both cores; 1 PIL process needs "
            "one); the CPU times above move less")


def _process_cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _pil_loop(paths: list, samples: int, cpu: _Cpu):
    def timed() -> float:
        start, start_cpu = time.perf_counter(), time.process_time()
        for path in itertools.islice(itertools.cycle(paths), samples):
            with Image.open(path) as img:
                np.array(img.convert("RGB"))  # a copy, as the loader's decode makes
        cpu.record("pil", time.process_time() - start_cpu, samples)
        return samples / (time.perf_counter() - start)

    return timed


def _loader(shard_dir: str, samples: int, num_workers: int, cpu: _Cpu):
    def timed() -> float:
        loader = train_loader(shard_dir, BATCH, num_workers=num_workers, seed=0)
        batches = iter(loader)
        # Every worker's first batch (start-up), then what they prefetched meanwhile: steady state from here.
        for _ in itertools.islice(batches, max(num_workers, 1) * (1 + PREFETCH_FACTOR)):
            pass
        workers = list(getattr(loader._batches, "_workers", []))
        start, start_cpu = time.perf_counter(), time.process_time()
        start_workers = [_process_cpu(w.pid) for w in workers]
        count = sum(len(b["caption"]) for b in itertools.islice(batches, max(1, samples // BATCH)))
        seconds = time.perf_counter() - start
        cpu.record(f"main{num_workers}", time.process_time() - start_cpu, count)
        if workers:
            cpu.record(f"workers{num_workers}", sum(_process_cpu(w.pid) for w in workers) - sum(start_workers), count)
        loader.close()
        return count / seconds

    return timed


def _per_sample_us(fn, count: int, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1e6 * sorted(times)[len(times) // 2] / count


def _profile_note(shard_dir: str, res: int) -> str:
    """Where a worker's time goes, per sample: each piece of its work timed alone, in this process."""
    paths = sorted(os.path.join(shard_dir, name) for name in os.listdir(shard_dir) if name.endswith(".tar"))
    skips = SkipCounter()
    raws = [raw for path in paths for raw in read_shard(path, 0, skips)]
    metas = [json.loads(raw["json"]) for raw in raws]
    decoder = SampleDecoder(res, clip=False, perceptual=False)
    rows = np.empty((BATCH, res, res, 3), np.uint8)
    samples = [decoder.decode(raw, rows[i % BATCH], (0.5, 0.5)) for i, raw in enumerate(raws)]
    whole = len(raws) // BATCH * BATCH
    n = len(raws)
    pieces = {
        "tar reading": _per_sample_us(lambda: [read_shard(path, 0, skips) for path in paths], n),
        "json parsing": _per_sample_us(lambda: [json.loads(raw["json"]) for raw in raws], n),
        "image id and caption choice": _per_sample_us(
            lambda: [choose_captions(len(sample_captions(m, r)), 0.5, 0.5) + (sample_image_id(m, r["__key__"]),)
                     for m, r in zip(metas, raws)], n),
        "JPEG decode into the batch": _per_sample_us(
            lambda: [decode_jpeg_into(raw["jpg"], rows[i % BATCH]) for i, raw in enumerate(raws)], n),
        "a sample's decode (JPEG, json, captions; SampleDecoder.decode)": _per_sample_us(
            lambda: [decoder.decode(raw, rows[i % BATCH], (0.5, 0.5)) for i, raw in enumerate(raws)], n),
        "batch building": _per_sample_us(
            lambda: [collate(samples[i:i + BATCH], None) for i in range(0, whole, BATCH)], whole),
    }
    return f"{res} px, where a worker's time goes (CPU us per sample, each piece timed alone): " + "; ".join(
        f"{name} {us:.1f}" for name, us in pieces.items())


def _cpu_note(res: int, cpu: _Cpu) -> str:
    parts = [f"PIL loop {cpu.us('pil'):.0f}"]
    for workers in (0, 1, 2):
        if f"main{workers}" not in cpu.per_sample:
            continue
        if workers == 0:
            parts.append(f"0 workers {cpu.us('main0'):.0f}")
        else:
            parts.append(f"{workers} worker(s) {cpu.us(f'workers{workers}'):.0f} in the workers + "
                         f"{cpu.us(f'main{workers}'):.0f} in the main process")
    return f"{res} px, CPU time per sample (us, medians): " + "; ".join(parts)


def run(quick: bool = False):
    n = 100 if quick else 1500
    measured = {64: 128, 256: 128} if quick else {64: 3072, 256: 2048}  # samples per measurement
    repeats = 1 if quick else 3
    tmp = tempfile.mkdtemp(prefix="bench-loader-")
    results, notes, machine_start, load_start = [], [], _machine_times(), os.getloadavg()[0]
    try:
        root = coco_like_folder(n)
        for res in (64, 256):
            out = os.path.join(tmp, f"shards{res}")
            code = build(["coco", "--root", root, "--split", "train", "--outdir", out, "--resolution", str(res),
                          "--samples-per-shard", str(max(8, n // 8)), "--no-progress"])
            if code != 0:
                raise RuntimeError(f"shard build failed with exit code {code}")
            paths = _extract_jpegs(out, os.path.join(tmp, f"jpg{res}"))
            cpu = _Cpu()
            for workers in (1, 2):
                pil, loader = interleaved(_pil_loop(paths, measured[res], cpu),
                                          _loader(out, measured[res], workers, cpu), repeats)
                results.append(Result(
                    f"loader/{res}px-{workers}w", f"samples/s of the streaming loader ({workers} worker(s), batch "
                    f"{BATCH}) over a plain PIL decode loop (1 process) on the same {len(paths)} JPEGs at {res} px, "
                    f"{measured[res]} samples each, steady state; goal >= {0.8 * workers:.1f}", "PIL loop",
                    f"loader, {workers} worker(s)", pil, loader, "samples/s"))
            if res == 64:
                pil, inproc = interleaved(_pil_loop(paths, measured[res], cpu), _loader(out, measured[res], 0, cpu),
                                          repeats)
                results.append(Result(
                    "loader/64px-in-process", "the same with num_workers=0: the loader's per-sample cost "
                    "(tar reading, json, caption choice, batch building) without worker processes", "PIL loop",
                    "loader, 0 workers", pil, inproc, "samples/s"))
            notes += [_cpu_note(res, cpu), _profile_note(out, res)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    notes += [_contention_note(machine_start, load_start), PROFILE_BEFORE]
    results[0].notes += notes
    return results
