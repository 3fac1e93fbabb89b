"""Worker side of the streaming loader: torch IterableDatasets whose items are WHOLE batches.

Why whole batches per worker: with DataLoader(batch_size=None) and in-order delivery, batch b
of an iterator comes from worker b % num_workers, and each worker's batches are a pure function
of where its stream starts. That makes the batch order deterministic and lets the main process
know, for every batch it hands out, which stream produced it and where that stream now stands.

Each batch carries bookkeeping keys that the main-process wrapper removes:
    _stream   logical stream (training) / worker slot (evaluation) that produced it
    _pos      training: (n, offset) of the stream just after this batch
    _skipped  samples skipped while producing this batch;  _seen  samples in it
    _damage   training: {shard: samples known unservable} that grew since the last batch (_KnownDamage)
An evaluation worker ends with a stats-only item ({"_stats_only": True, ...}) so that skips
after its last full batch are counted too.
"""

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from textgan.data.loading.samples import BatchBuilder, SampleError, SkipCounter, read_shard

# Keys of the per-stream random generators; different domains give independent streams.
_SHARD_DOMAIN = 0
_SAMPLE_DOMAIN = 1


def _worker_index() -> int:
    """This worker's index (0 in the main process); worker processes use one torch thread, since
    decoding is per-sample Python work and N workers x M threads would oversubscribe the cores."""
    info = get_worker_info()
    if info is None:
        return 0
    torch.set_num_threads(1)
    return info.id


def _in_worker() -> bool:
    return get_worker_info() is not None


class _KnownDamage:
    """Per shard, how many of the samples its manifest entry declares this stream knows it cannot
    serve: lost to truncation, plus those met in one visit that failed to decode. Reads are
    deterministic, so this is a lower bound of the shard's damage; the skip-rate alarm
    (textgan/data/loading/skip_alarm.py) weighs it against the manifest. Unlike the skip count it does not
    grow when a damaged shard is drawn again."""

    def __init__(self):
        self.known, self._reported, self._shard, self._visit = {}, {}, None, 0

    def start_visit(self, shard: int, declared: int, readable: int) -> None:
        self._shard, self._visit = shard, max(declared - readable, 0)
        self._note()

    def failed_sample(self) -> None:
        self._visit += 1
        self._note()

    def _note(self) -> None:
        if self._visit > self.known.get(self._shard, 0):
            self.known[self._shard] = self._visit

    def report(self) -> dict:
        """What grew since the last report."""
        grown = {s: n for s, n in self.known.items() if n != self._reported.get(s)}
        self._reported.update(grown)
        return grown


class _ShardVisit:
    """Shard visit n of a training stream: which shard, its raw samples, their order, and the
    caption draws for each position. All drawn from rng(seed, rank, stream, n), so a position
    (n, offset) fully determines what comes next."""

    def __init__(self, raw: list, order: np.ndarray, draws: np.ndarray, shard: int):
        self.raw, self.order, self.draws, self.shard = raw, order, draws, shard

    def __len__(self):
        return len(self.order)


class TrainStream(IterableDataset):
    """Infinite resampled batches of one rank. Logical stream s (one per DataLoader worker) visits
    shards n = 0, 1, 2, ...: visit n picks a shard at random, weighted by its sample count so
    that every image is equally likely to be drawn, permutes the shard's samples and serves them.

    The logical stream of physical worker p is (p + start_batch) % num_streams: a fresh DataLoader
    iterator always starts at worker 0, so this rotation makes a resumed iterator continue the
    round-robin with the stream that owes the next batch.

    Memory: a worker holds the raw bytes of the shard it is visiting (a full-shard shuffle whose
    position is just an offset), so keep shards to at most a few hundred MB."""

    def __init__(self, paths, counts, batch_size, *, seed, rank, num_streams, positions, start_batch,
                 decoding: dict):
        self.paths, self.counts = list(paths), list(counts)
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self.num_streams, self.positions, self.start_batch = num_streams, list(positions), start_batch
        self.decoding = decoding  # SampleDecoder's arguments (textgan.data.loading.samples.decoder_settings)
        total = float(sum(self.counts))
        self.weights = np.array([c / total for c in self.counts])

    def __iter__(self):
        stream = (_worker_index() + self.start_batch) % self.num_streams
        n, offset = self.positions[stream]
        return self._batches(stream, n, offset)

    def _visit(self, stream, n, skips, cache):
        rng = np.random.default_rng([self.seed, self.rank, stream, n, _SHARD_DOMAIN])
        shard = int(rng.choice(len(self.paths), p=self.weights))
        if cache.get("shard") != shard:  # consecutive visits often draw the same shard of a small set
            cache.update(shard=shard, raw=read_shard(self.paths[shard], self.counts[shard], skips))
        elif len(cache["raw"]) < self.counts[shard]:
            # Re-count a damaged shard's losses on every visit, as if it had been read again.
            skips.skip(self.paths[shard], "damaged tar", n=self.counts[shard] - len(cache["raw"]))
        raw = cache["raw"]
        return _ShardVisit(raw, rng.permutation(len(raw)), rng.random((len(raw), 2)), shard)

    def _batches(self, stream, n, offset):
        builder = BatchBuilder(self.decoding, self.batch_size, _in_worker())
        skips, reported, damage = SkipCounter(), 0, _KnownDamage()
        cache, visit = {}, None
        # A resumed stream re-enters visit n mid-way: that visit's losses were already counted.
        quiet_entry = offset > 0
        alive = {i for i, c in enumerate(self.counts) if c > 0}  # shards that may still serve
        served_by_visit, visit_from_start = 0, False
        while True:
            if visit is None:
                before = skips.count
                visit = self._visit(stream, n, skips, cache)
                damage.start_visit(visit.shard, self.counts[visit.shard], len(visit.raw))
                if quiet_entry:
                    skips.count, quiet_entry = before, False
                served_by_visit, visit_from_start = 0, offset == 0
            if offset >= len(visit):
                # A whole visit with nothing served: that shard can never serve (reads are
                # deterministic). Without this check a stream over only-broken shards spins forever.
                if served_by_visit == 0 and visit_from_start:
                    alive.discard(visit.shard)
                    if not alive:
                        raise RuntimeError(
                            f"no shard of {len(self.paths)} has a readable sample (first: {self.paths[0]}); "
                            "check or rebuild the shard directory"
                        )
                n, offset, visit = n + 1, 0, None
                continue
            position = offset
            offset += 1
            raw = visit.raw[visit.order[position]]
            try:
                builder.add(raw, tuple(visit.draws[position]))
                served_by_visit += 1
            except SampleError as exn:
                skips.skip(f"{self.paths[visit.shard]}:{raw.get('__key__')}", str(exn))
                damage.failed_sample()
                continue
            if len(builder) == self.batch_size:
                if offset >= len(visit):  # normalise: "visit n finished" is "visit n+1 not started"
                    n, offset, visit = n + 1, 0, None
                batch = builder.finish()
                batch.update(_stream=stream, _pos=(n, offset), _skipped=skips.count - reported,
                             _seen=self.batch_size, _damage=damage.report())
                reported = skips.count
                yield batch


class EvalStream(IterableDataset):
    """Every sample of this rank's shards exactly once, in tar order. Shard i belongs to slot
    i % (world_size * num_slots), slot = rank * num_slots + worker: a fixed assignment, so the
    ranks and workers together cover each shard once. A worker's last batch may be short."""

    def __init__(self, paths, counts, batch_size, *, rank, world_size, num_slots, decoding: dict):
        self.paths, self.counts, self.batch_size = list(paths), list(counts), batch_size
        self.rank, self.world_size, self.num_slots = rank, world_size, num_slots
        self.decoding = decoding  # SampleDecoder's arguments (textgan.data.loading.samples.decoder_settings)

    def shards_of_slot(self, worker: int) -> list:
        slot = self.rank * self.num_slots + worker
        return list(range(slot, len(self.paths), self.world_size * self.num_slots))

    def __iter__(self):
        worker = _worker_index()
        builder = BatchBuilder(self.decoding, self.batch_size, _in_worker())
        skips, reported = SkipCounter(), 0
        for shard in self.shards_of_slot(worker):
            for raw in read_shard(self.paths[shard], self.counts[shard], skips):
                try:
                    builder.add(raw)  # captions drawn from the image id
                except SampleError as exn:
                    skips.skip(f"{self.paths[shard]}:{raw.get('__key__')}", str(exn))
                    continue
                if len(builder) == self.batch_size:
                    yield dict(builder.finish(), _stream=worker, _skipped=skips.count - reported,
                               _seen=self.batch_size)
                    reported = skips.count
        if len(builder):
            seen = len(builder)
            yield dict(builder.finish(), _stream=worker, _skipped=skips.count - reported, _seen=seen)
        elif skips.count > reported:
            yield {"_stats_only": True, "_stream": worker, "_skipped": skips.count - reported, "_seen": 0}
