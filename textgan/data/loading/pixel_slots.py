"""How a batch's pixels travel from a loader worker to the main process: through shared memory reused
from batch to batch, instead of a new segment per batch.

Why, measured (benchmarks/bench_loader.py's shards, batch 32, 2-core VM): a torch tensor put on a
DataLoader worker's queue is copied into a new shared-memory segment whose file descriptor is then
passed to the main process, and every page of a new segment is a page fault on both sides. With the
stacking copy before it, that cost the worker 180-220 us and the main process 40-85 us per sample at
256 px (6 MB a batch; a JPEG decode there is ~500 us), and 25-35 us and ~20 us at 64 px. Pickling a
numpy array through the pipe instead costs more at 256 px (worker ~470 us, main ~250 us). Through
reused slots, a batch costs the worker ~2 us and the main process 2-4 us per sample more than one
without pixels.

So each worker keeps a few batch-sized "slots" in shared memory (SlotPool): samples are decoded
straight into a slot's rows, the slot's memory goes to the main process once, and later batches
only name their slot. The main process (SlotReceiver) hands out a tensor over the slot's rows and
marks the slot free in a shared flag array when the last reference to that tensor (or to any view
or numpy array of it) is gone; only then may the worker write the slot again. A consumer that keeps
its batches keeps its slots: when none is free the worker sends a new tensor the ordinary way, so a
batch's pixels never change under its holder.

Without worker processes (num_workers=0) there is nothing to send: each batch gets a new array.
"""

import os
import weakref

import numpy as np
import torch

# Slots per worker: the batches a worker may have in flight (DataLoader's prefetch_factor of 2 queued
# and one being built) plus those a training loop holds (the current batch, and the previous one
# while the next is fetched), with room to spare. Slots are made when first needed (a loop that drops each
# batch before the next-but-one used 4 with 1 worker, 3 per worker with 2).
MAX_SLOTS = 8
_BUSY, _FREE = 1, 0


class SlotRef:
    """What a batch carries for its pixels when they are in a slot: the pool, the slot, the rows used,
    and (the first time the slot is sent) the slot's and the pool's shared tensors."""

    __slots__ = ("pool", "slot", "rows", "buffer", "flags")

    def __init__(self, pool, slot, rows, buffer=None, flags=None):
        self.pool, self.slot, self.rows, self.buffer, self.flags = pool, slot, rows, buffer, flags

    def __reduce__(self):
        return SlotRef, (self.pool, self.slot, self.rows, self.buffer, self.flags)


class SlotPool:
    """Worker side: batch-sized uint8 arrays [B, R, R, 3] to decode into, and what to send for them.

    shared=False (no worker processes): every batch gets a new array, sent as a tensor."""

    def __init__(self, batch_size: int, resolution: int, shared: bool):
        self.shape = (batch_size, resolution, resolution, 3)
        self.shared = shared
        self.token = os.urandom(8).hex()  # names this pool in the main process (pids can be reused)
        self._slots = []  # shared uint8 tensors
        self._sent = set()  # slots whose tensor the main process already has
        self._flags = torch.zeros(MAX_SLOTS, dtype=torch.uint8).share_memory_() if shared else None
        self._flags_sent = False

    def take(self):
        """(slot, array): an array to fill; slot None when it is not one of the pool's (send it as is)."""
        if not self.shared:
            return None, np.empty(self.shape, dtype=np.uint8)
        flags = self._flags.numpy()
        for slot in range(len(self._slots)):
            if flags[slot] == _FREE:
                flags[slot] = _BUSY
                return slot, self._slots[slot].numpy()
        if len(self._slots) < MAX_SLOTS:
            self._slots.append(torch.empty(self.shape, dtype=torch.uint8).share_memory_())
            flags[len(self._slots) - 1] = _BUSY
            return len(self._slots) - 1, self._slots[-1].numpy()
        return None, np.empty(self.shape, dtype=np.uint8)  # every slot still held by the consumer

    def send(self, slot, array: np.ndarray, rows: int):
        """What the batch carries for `rows` filled rows of a taken array."""
        if slot is None:
            return torch.from_numpy(array[:rows])
        first = slot not in self._sent
        self._sent.add(slot)
        flags = None if self._flags_sent else self._flags
        self._flags_sent = True
        return SlotRef(self.token, slot, rows, self._slots[slot] if first else None, flags)


class SlotReceiver:
    """Main-process side: turns what a batch carries for its pixels into the uint8 tensor handed out.
    One per DataLoader iterator (its workers' pools)."""

    def __init__(self):
        self._slots = {}  # (pool, slot) -> numpy view of the slot's shared memory
        self._flags = {}  # pool -> numpy view of its shared flag array

    def pixels(self, sent) -> torch.Tensor:
        if not isinstance(sent, SlotRef):
            return sent  # a tensor of its own (no workers, or no free slot)
        if sent.flags is not None:
            self._flags[sent.pool] = sent.flags.numpy()
        key = (sent.pool, sent.slot)
        if sent.buffer is not None:
            self._slots[key] = sent.buffer.numpy()
        if key not in self._slots or sent.pool not in self._flags:
            raise RuntimeError(f"pixels of slot {sent.slot} of a loader worker arrived before the slot's memory")
        # A new array object per batch: the tensor's storage holds it, so it dies with the last view of
        # the batch's pixels, and only then the slot is free again.
        view = self._slots[key][:sent.rows]
        weakref.finalize(view, _free, self._flags[sent.pool], sent.slot).atexit = False  # at exit: nothing to free
        return torch.from_numpy(view)


def _free(flags: np.ndarray, slot: int) -> None:
    flags[slot] = _FREE
