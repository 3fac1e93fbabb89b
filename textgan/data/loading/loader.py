"""Streaming loader over a textgan shard directory (format: textgan/data/format.py).

    loader = train_loader("shards/coco64", batch_size=32, rank=r, world_size=R, seed=0)
    for step, batch in zip(range(total_steps), loader): ...
    checkpoint["data"] = loader.state_dict()           # one state per rank
    loader = train_loader(..., state=checkpoint["data"])  # continues with the next unseen batch

Training (`train_loader`): infinite, resampled (shards drawn at random, weighted by size), so every
rank yields the same number of batches whatever the shard count, deterministic for (seed, rank,
position), resumable exactly. Evaluation (`eval_loader`): every sample exactly once across all ranks
and workers; ranks may get different numbers of batches, so gather results after the loop rather
than calling collectives per batch.

Batch dict (both modes):
    pixels             uint8 [B, R, R, 3] as decoded; textgan.data.decode.to_float_image(pixels) gives the
                       float32 [B, 3, R, R] in [-1, 1] that networks take (convert on the training device).
                       From worker processes: shared memory that the worker reuses once no reference to
                       this tensor (or a view of it) is left (pixel_slots.py); a batch kept is never changed
    caption            list[str], one of the image's captions drawn at random per access
                       (evaluation: drawn from the image id, the same in every evaluation)
    caption_alt        list[str], another caption of the same image (the same one if it has only one)
    caption_index, caption_alt_index   int64 [B];  image_id int64 [B];  key list[str]
    clip_img, clip_txt, clip_txt_alt   float32 [B, D] when the shards carry CLIP features
                       (clip_txt / clip_txt_alt: the rows of caption / caption_alt)
    perceptual         float32 [B, F] when the shards carry perceptual features
Damaged samples and tars are skipped with a warning and counted (`.skipped`, `.seen`).

Worker-side details: textgan/data/loading/streams.py (streams), samples.py (read, decode), pixel_slots.py (how
a batch's pixels reach this process).
"""

import atexit
import hashlib
import json
import signal
import weakref

import torch
from torch.utils.data import DataLoader

from textgan.data.loading.pixel_slots import SlotReceiver
from textgan.data.loading.samples import arrays_as_tensors, decoder_settings, feature_flags
from textgan.data.loading.streams import EvalStream, TrainStream
from textgan.data.manifest import load_manifest, shard_path
from textgan.data.loading.skip_alarm import SkipRateAlarm, SkipRateExceeded  # noqa: F401  (SkipRateExceeded: re-exported)
from textgan.errors import UsageError

STATE_FORMAT = "textgan-train-loader"
STATE_VERSION = 1
_SUPERSEDED = "this iterator was superseded by a newer iter(), load_state_dict() or close()"


def _received(batch: dict, slots: SlotReceiver) -> dict:
    """A batch as a worker sent it -> as handed out: pixels from their shared-memory slot, arrays as tensors."""
    batch["pixels"] = slots.pixels(batch["pixels"])
    return arrays_as_tensors(batch)


def _passthrough(item):
    # The default conversion would walk every batch; ours are already tensors and lists.
    return item


def _check_layout(batch_size, rank, world_size, num_workers):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")


class _ShardSet:
    """What both loaders need from the manifest: shard paths, sample counts, resolution, features."""

    def __init__(self, shards_dir: str):
        self.manifest = load_manifest(shards_dir)
        shards = self.manifest.get("shards") or []
        self.paths = [shard_path(shards_dir, s) for s in shards]
        self.counts = [int(s["samples"]) for s in shards]
        if not shards or sum(self.counts) == 0:
            raise UsageError(f"{shards_dir}: the manifest lists no samples; rebuild the shards.")
        self.resolution = int(self.manifest["settings"]["resolution"])
        self.clip, self.perceptual = feature_flags(self.manifest)
        self.decoding = decoder_settings(self.manifest)
        # Identifies the shard set in a saved state: positions mean nothing over other shards.
        listing = json.dumps([[s["name"], s["samples"], s.get("sha256")] for s in shards])
        self.digest = hashlib.sha256(listing.encode()).hexdigest()[:16]

    def stream_kwargs(self):
        return dict(decoding=self.decoding)


def _data_loader(dataset, num_workers):
    # A private generator: DataLoader draws its base seed from it instead of the global torch RNG,
    # so iterating the loader never changes the training's random state (our streams use their own
    # explicitly keyed numpy generators and ignore the base seed).
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_passthrough,
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=_ignore_job_signals if num_workers > 0 else None,
        # Relies on the DataLoader's default in-order delivery (batch b from worker b % num_workers);
        # TrainLoader checks it on every batch. (`in_order=` itself only exists from torch 2.6.)
    )


# DataLoader iterators whose workers may still run. A worker ignores SIGTERM (see _ignore_job_signals),
# and multiprocessing's exit handler stops daemon processes with SIGTERM and then joins them: an
# iterator still alive at interpreter exit (kept, e.g., by the traceback of an error raised in the
# training loop) would make the process wait for its workers forever. _stop_left_workers, registered
# after torch's and multiprocessing's exit handlers and so run before them, stops those workers.
_RUNNING = weakref.WeakSet()
# Every worker process started, for the same handler: an iterator dropped while a worker still runs (one blocked
# on a full queue, its batches held by a failed test's traceback) is gone from _RUNNING, but the worker is
# not, and the exit handler would wait for it forever. Dead ones are pruned at each start.
_WORKER_PROCESSES = []


def _start_workers(dataset, num_workers):
    batches = iter(_data_loader(dataset, num_workers))
    if num_workers > 0:
        _RUNNING.add(batches)
        _WORKER_PROCESSES[:] = [w for w in _WORKER_PROCESSES if w.is_alive()]
        _WORKER_PROCESSES.extend(getattr(batches, "_workers", []))
    return batches


def stop_workers(batches) -> None:
    """Shut the workers of a DataLoader iterator down now (a no-op without workers, or when done).
    torch's shutdown asks each worker to leave and terminates (SIGTERM) those that do not: ours
    ignore SIGTERM, so a worker still alive after that is killed."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is None:
        return
    workers = list(getattr(batches, "_workers", []))
    shutdown()
    for worker in workers:
        if worker.is_alive():
            worker.kill()
            worker.join(timeout=5)
    _RUNNING.discard(batches)


@atexit.register
def _stop_left_workers() -> None:
    for batches in list(_RUNNING):
        stop_workers(batches)
    for worker in _WORKER_PROCESSES:
        if worker.is_alive():
            worker.kill()
            worker.join(timeout=5)


class TrainLoader:
    """Infinite training batches of one rank; see the module docstring and `train_loader`.

    Iterating continues from the consumed position: `iter()` again (or after load_state_dict)
    starts where the last batch handed out left off. Only the newest iterator is valid; an
    older one raises when advanced, since two iterators would advance the same position."""

    def __init__(self, shards_dir, batch_size, *, rank=0, world_size=1, seed=0, num_workers=2, max_skip_rate=None):
        _check_layout(batch_size, rank, world_size, num_workers)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if max_skip_rate is not None and not 0 <= max_skip_rate <= 1:
            raise ValueError(f"max_skip_rate must be in [0, 1], got {max_skip_rate}")
        self.shards_dir = str(shards_dir)
        self._shards = _ShardSet(self.shards_dir)
        self.manifest = self._shards.manifest
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.num_workers, self.max_skip_rate = seed, num_workers, max_skip_rate
        self._num_streams = max(num_workers, 1)  # num_workers=0: one stream in this process
        self._generation = 0
        self._state = {"batches": 0, "workers": {}, "skipped": 0, "seen": 0}
        self._alarm = SkipRateAlarm(max_skip_rate, self.shards_dir, self._shards.paths, self._shards.counts)
        self._batches = None  # the DataLoader iterator of the newest iter(), whose workers close() stops

    @property
    def skipped(self) -> int:
        """Samples skipped (damaged) while producing the batches handed out so far."""
        return self._state["skipped"]

    @property
    def seen(self) -> int:
        """Samples served in the batches handed out so far."""
        return self._state["seen"]

    @property
    def batches(self) -> int:
        return self._state["batches"]

    def state_dict(self) -> dict:
        """JSON-serialisable position after the last batch handed out (not after the workers'
        prefetch). "workers" maps each stream ever used to its (shard visit n, offset)."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "shards_digest": self._shards.digest,
            "batches": self._state["batches"],
            "workers": {w: list(pos) for w, pos in sorted(self._state["workers"].items())},
            "skipped": self._state["skipped"],
            "seen": self._state["seen"],
            "damage": self._alarm.state(),  # what the skip-rate alarm knows per shard (see skip_alarm.py)
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (from state_dict(), possibly through JSON). Refuses a state of
        another seed, rank, world size or shard set, whose positions would mean other batches.
        A different num_workers is accepted: each stream continues from its own position and
        streams new to this run start at their beginning, so no consumed batch is replayed
        (the batch order then differs from a run that kept the old worker count)."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError("not a textgan training-loader state (expected the dict from TrainLoader.state_dict())")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')} is not supported (this is {STATE_VERSION})")
        mine = {"seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "shards_digest": self._shards.digest}
        wrong = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if wrong:
            details = ", ".join(f"{k}: saved {saved!r}, now {now!r}" for k, (saved, now) in wrong.items())
            raise ValueError(
                f"the loader state was saved by another data layout ({details}); resume with the same seed, "
                "rank, world size and shard directory, or start the data stream afresh (state=None)"
            )
        self._generation += 1  # invalidate iterators that still run from the old position
        self._state = {
            "batches": int(state["batches"]),
            "workers": {int(w): (int(pos[0]), int(pos[1])) for w, pos in state["workers"].items()},
            "skipped": int(state["skipped"]),
            "seen": int(state["seen"]),
        }
        self._alarm.load(state.get("damage"))  # absent from states saved before the alarm knew shards

    def close(self) -> None:
        """Stop the loader's workers now; its iterator then raises. Call it on every way out of
        training (the loop's `finally`): an error's traceback keeps the iterator, hence the workers,
        alive. The position stays: iter() again starts new workers where the last batch left off."""
        self._generation += 1
        if self._batches is not None:
            stop_workers(self._batches)
            self._batches = None

    def __iter__(self):
        self.close()  # only the newest iterator is valid: the old one's workers have nothing left to do
        self._generation += 1
        positions = [self._state["workers"].get(w, (0, 0)) for w in range(self._num_streams)]
        dataset = TrainStream(
            self._shards.paths, self._shards.counts, self.batch_size, seed=self.seed, rank=self.rank,
            num_streams=self._num_streams, positions=positions, start_batch=self._state["batches"],
            **self._shards.stream_kwargs(),
        )
        self._batches = _start_workers(dataset, self.num_workers)
        return self._consume(self._batches, self._generation)

    def _consume(self, batches, generation):
        state, slots = self._state, SlotReceiver()
        for batch in batches:
            if generation != self._generation:
                raise RuntimeError(_SUPERSEDED)
            stream = batch.pop("_stream")
            if stream != state["batches"] % self._num_streams:  # the round-robin the resume relies on
                raise RuntimeError(f"batch {state['batches']} came from stream {stream}: DataLoader order broken")
            state["workers"][stream] = tuple(batch.pop("_pos"))
            state["skipped"] += batch.pop("_skipped")
            state["seen"] += batch.pop("_seen")
            state["batches"] += 1
            self._alarm.record(batch.pop("_damage"))
            self._alarm.check(state["skipped"], state["seen"])
            yield _received(batch, slots)
        if generation != self._generation:  # close() ended the workers' stream: not the data's end
            raise RuntimeError(_SUPERSEDED)


def train_loader(shards_dir, batch_size, *, rank=0, world_size=1, seed=0, num_workers=2, max_skip_rate=None,
                 state=None) -> TrainLoader:
    """Infinite, resampled, resumable training batches for `rank` of `world_size` (see module doc).

    max_skip_rate: raise SkipRateExceeded once the shards are known to be damaged beyond it: at least
    that fraction of the samples their manifest lists cannot be served (textgan/data/loading/skip_alarm.py).
    state: a TrainLoader.state_dict() to continue from."""
    loader = TrainLoader(shards_dir, batch_size, rank=rank, world_size=world_size, seed=seed,
                         num_workers=num_workers, max_skip_rate=max_skip_rate)
    if state is not None:
        loader.load_state_dict(state)
    return loader


class EvalLoader:
    """One pass over this rank's share of the shards per iter(); `.skipped` / `.seen` count the
    current (or last) pass; `.shards` are this rank's shard paths, `.num_samples` the samples
    the manifest lists for them."""

    def __init__(self, shards_dir, batch_size, *, rank=0, world_size=1, num_workers=2):
        _check_layout(batch_size, rank, world_size, num_workers)
        self.shards_dir = str(shards_dir)
        shards = _ShardSet(self.shards_dir)
        self.manifest = shards.manifest
        slots = max(num_workers, 1)
        if len(shards.paths) < world_size * slots:
            raise UsageError(
                f"{len(shards.paths)} shards cannot feed {world_size} ranks x {slots} workers "
                f"({self.shards_dir}): every worker needs at least one shard to read each sample exactly "
                "once; rebuild with more shards (--samples-per-shard smaller) or use fewer workers"
            )
        self.num_workers = num_workers
        self._dataset = EvalStream(shards.paths, shards.counts, batch_size, rank=rank, world_size=world_size,
                                   num_slots=slots, **shards.stream_kwargs())
        mine = [i for w in range(slots) for i in self._dataset.shards_of_slot(w)]
        self.shards = [shards.paths[i] for i in sorted(mine)]
        self.num_samples = sum(shards.counts[i] for i in mine)
        self.skipped = 0
        self.seen = 0

    def __iter__(self):
        self.skipped = self.seen = 0
        batches, slots = _start_workers(self._dataset, self.num_workers), SlotReceiver()
        try:
            for item in batches:
                self.skipped += item.pop("_skipped")
                self.seen += item.pop("_seen")
                item.pop("_stream")
                if not item.pop("_stats_only", False):
                    yield _received(item, slots)
        finally:  # a pass left early (break, error): its workers go now, or at the latest at exit
            stop_workers(batches)


def eval_loader(shards_dir, batch_size, *, rank=0, world_size=1, num_workers=2) -> EvalLoader:
    """Every sample once across all ranks and workers (see module doc); UsageError when there are
    fewer shards than world_size x max(num_workers, 1)."""
    return EvalLoader(shards_dir, batch_size, rank=rank, world_size=world_size, num_workers=num_workers)


def _ignore_job_signals(worker_id: int) -> None:
    """Loader workers ignore SIGTERM and SIGINT. On preemption Slurm (and submitit's _interrupt) signals
    every process of the job, and Ctrl-C on a --local run reaches every process of the terminal's
    foreground process group; a worker that died of either would crash training before the ranks
    reach the next step boundary and save. The trainer process handles the signals; the workers
    end with it (close(), or torch's worker watchdog once the trainer process is gone).
    (torch installs its own worker SIGTERM handler before worker_init_fn, hence here.)"""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
