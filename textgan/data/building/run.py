"""Running the pending shards of a plan: images in worker processes, shards written in order.

Workers turn Records into JPEGs (worker.load_image) in parallel; the main process
takes the results in plan order (ordered imap), computes features for a whole shard in
batches, and writes the shard (shard_writer). Results are consumed in plan order, so the
output does not depend on the number of workers or on their timing.

Process start method: "forkserver" (else "spawn"), never "fork". With feature flags the
main process holds torch and its OpenMP/MKL thread pools, which are not fork-safe (a
forked child can deadlock on a lock held by a thread that does not exist in it). A fresh
worker imports only PIL/numpy via worker.py, which costs well under a second.

The pool is a concurrent.futures.ProcessPoolExecutor rather than multiprocessing.Pool:
when a worker dies (a crash inside an image library, the OOM killer), Pool waits forever
for its results, while the executor raises BrokenProcessPool, which we turn into a clear
error; finished shards stay, and rerunning resumes.
"""

import collections
import multiprocessing as mp
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from tqdm import tqdm

from textgan.data.building.worker import ImageSettings, init_worker, load_image
from textgan.data.records import skipped_entry
from textgan.data.building.shard_writer import encode_sample, write_shard


class WorkerCrashed(Exception):
    """A worker process died while loading images: exit code 1. Finished shards are kept."""

    exit_code = 1


def _start_method() -> str:
    methods = mp.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def _init_pool_worker(settings: ImageSettings) -> None:
    # Ctrl-C goes to the whole process group; only the main process handles it (and
    # terminates the pool), so workers do not print a traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init_worker(settings)


def _loaded_per_shard(pool, task_lists: list, budget: int, workers: int):
    """Yield one iterator of LoadedImage per task list, in order. Later lists are submitted
    while fewer than `budget` images are in flight, so workers keep going while the main
    process computes features and writes, but memory stays bounded by ~budget JPEGs."""
    submitted = collections.deque()
    next_list, in_flight = 0, 0
    for i, tasks in enumerate(task_lists):
        while next_list < len(task_lists) and (next_list <= i or in_flight < budget):
            batch = task_lists[next_list]
            if pool is None:
                submitted.append(map(load_image, batch))  # lazy: in-process, one at a time
            else:
                chunksize = max(1, min(16, len(batch) // (4 * workers)))
                submitted.append(pool.map(load_image, batch, chunksize=chunksize))
            in_flight += len(batch)
            next_list += 1
        yield submitted.popleft()
        in_flight -= len(tasks)


def _shard_samples(shard, loaded, excluded: set, excluded_reason: str, features, progress):
    """(samples, skipped) of one shard from its records and their loaded images."""
    kept, skipped = [], []
    for record in shard.records:
        if record.image_id in excluded:
            skipped.append(skipped_entry(record.image_id, record.file_name, excluded_reason))
            continue
        image = next(loaded)
        progress.update(1)
        if image.image_id != record.image_id:  # cannot happen with ordered imap; never write a mix-up
            raise RuntimeError(f"worker returned image {image.image_id} for record {record.image_id}")
        if image.jpeg is None:
            skipped.append(skipped_entry(record.image_id, record.file_name, image.reason))
        else:
            kept.append((record, image))
    extra = features.compute([im.jpeg for _, im in kept], [r.captions for r, _ in kept]) \
        if features is not None and features.enabled else [{} for _ in kept]
    samples = []
    for (record, image), feats in zip(kept, extra):
        meta = {"image_id": record.image_id, "file_name": record.file_name, "captions": list(record.captions),
                "width": image.width, "height": image.height, "split": record.split}
        if record.attributes is not None:
            meta["attributes"] = record.attributes
        samples.append(encode_sample(record.image_id, image.jpeg, meta, feats))
    return samples, skipped


def run_shards(out_dir: str, pending: list, settings: ImageSettings, *, workers: int, features=None,
               excluded=frozenset(), excluded_reason: str = "excluded", progress: bool = True,
               desc: str = "shards") -> dict:
    """Write every shard of `pending` (plan.ShardPlan) into out_dir; {name: shard record}."""
    task_lists = [[r for r in s.records if r.image_id not in excluded] for s in pending]
    total = sum(map(len, task_lists))
    budget = max(2 * max(map(len, task_lists), default=1), 64 * workers)
    pool = None
    if workers > 1 and total > 1:
        pool = ProcessPoolExecutor(min(workers, total), mp_context=mp.get_context(_start_method()),
                                   initializer=_init_pool_worker, initargs=(settings,))
    else:
        init_worker(settings)
    written = {}
    bar = tqdm(total=total, unit="img", desc=desc, disable=not progress, file=sys.stderr,
               dynamic_ncols=True, smoothing=0.05)
    try:
        for shard, loaded in zip(pending, _loaded_per_shard(pool, task_lists, budget, workers)):
            samples, skipped = _shard_samples(shard, loaded, excluded, excluded_reason, features, bar)
            written[shard.name] = write_shard(out_dir, shard.name, samples, skipped)
            bar.set_postfix_str(f"{len(written)}/{len(pending)} shards", refresh=False)
    except BrokenProcessPool as e:
        raise WorkerCrashed(
            f"a worker process died while loading images ({len(written)} of {len(pending)} shards "
            "finished in this run), e.g. killed for memory or crashed inside an image library. "
            "Finished shards are kept: rerun the same command to resume; if it happens again, "
            "rerun with --workers 1 to see which image causes it."
        ) from e
    finally:
        bar.close()
        if pool is not None:
            _stop(pool, failed=sys.exc_info()[0] is not None)
    return written


def _stop(pool: ProcessPoolExecutor, failed: bool) -> None:
    """Shut the pool down; after an error, kill its workers first so none outlives the build
    (the executor has no public terminate before Python 3.14, hence _processes)."""
    if failed:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
