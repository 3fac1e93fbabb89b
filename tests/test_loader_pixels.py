"""The loader's pixels: bit-identical to a plain PIL decode of the stored JPEG however they travel (in process,
or from worker processes through reused shared-memory slots, textgan/data/loading/pixel_slots.py), and a batch
still held, or any view of its pixels, never changes when its slot could be reused."""

import gc
import io
import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from shard_fixture import write_shard_dir
from textgan.data import format as fmt
from textgan.data.loading.loader import eval_loader, train_loader
from textgan.data.loading.pixel_slots import MAX_SLOTS, SlotPool, SlotReceiver

RES = 24


def _noise_jpeg(image_id: int) -> bytes:
    pixels = np.random.default_rng(image_id).integers(0, 256, (RES, RES, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _write_noise_shards(out_dir, n_samples=60, per_shard=10) -> dict:
    """Shards of noise JPEGs (any decoding difference shows); returns key -> plain PIL decode of its JPEG."""
    expected, shards = {}, []
    for start in range(0, n_samples, per_shard):
        samples = []
        for image_id in range(start, min(start + per_shard, n_samples)):
            data = _noise_jpeg(image_id)
            key = fmt.sample_key(image_id)
            with Image.open(io.BytesIO(data)) as img:
                expected[key] = np.array(img.convert("RGB"))
            samples.append({"__key__": key, fmt.KEY_JPG: data,
                            fmt.KEY_JSON: json.dumps({"image_id": image_id, "captions": [f"c{image_id}"]}).encode()})
        shards.append(samples)
    write_shard_dir(out_dir, shards, split="train", resolution=RES, samples_per_shard=per_shard)
    return expected


def _assert_plain_pixels(batch, expected):
    assert batch["pixels"].dtype == torch.uint8 and batch["pixels"].shape[1:] == (RES, RES, 3)
    for i, key in enumerate(batch["key"]):
        assert np.array_equal(batch["pixels"][i].numpy(), expected[key]), key


@pytest.mark.multiproc
@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_training_pixels_are_a_plain_pil_decode_of_the_stored_jpeg(tmp_path, num_workers):
    expected = _write_noise_shards(tmp_path)
    loader = train_loader(tmp_path, 7, seed=1, num_workers=num_workers)
    try:
        for batch in itertools.islice(iter(loader), 3 * MAX_SLOTS):  # past the slots: they are reused
            _assert_plain_pixels(batch, expected)
    finally:
        loader.close()  # a failure's traceback keeps the iterator: its workers would outlive the test


@pytest.mark.multiproc
def test_evaluation_pixels_are_a_plain_pil_decode_short_last_batches_included(tmp_path):
    expected = _write_noise_shards(tmp_path, n_samples=55)
    batches = list(eval_loader(tmp_path, 8, num_workers=2))
    assert sorted(k for b in batches for k in b["key"]) == sorted(expected)
    assert sorted(len(b["key"]) for b in batches) == [1, 6] + [8] * 6  # 2 workers, 30 and 25 samples: short ends
    for batch in batches:
        _assert_plain_pixels(batch, expected)


@pytest.mark.multiproc
def test_held_batches_and_views_of_their_pixels_never_change(tmp_path):
    expected = _write_noise_shards(tmp_path)
    loader = train_loader(tmp_path, 5, seed=2, num_workers=1)
    try:
        it = iter(loader)
        held = [next(it) for _ in range(MAX_SLOTS + 3)]  # more than a worker's slots: some come as tensors of their own
        views = []
        for batch in itertools.islice(it, 2 * MAX_SLOTS):
            views.append((batch["key"][1:3], batch["pixels"][1:3]))  # the batch itself is dropped at once
        for batch in itertools.islice(it, 2 * MAX_SLOTS):  # the worker keeps writing into the free slots
            _assert_plain_pixels(batch, expected)
    finally:
        loader.close()
    for batch in held:
        _assert_plain_pixels(batch, expected)
    for keys, pixels in views:
        for key, image in zip(keys, pixels):
            assert np.array_equal(image.numpy(), expected[key])


def test_a_slot_is_reused_once_every_view_of_its_pixels_is_gone():
    pool, receiver = SlotPool(2, 4, shared=True), SlotReceiver()

    def batch(fill):
        slot, array = pool.take()
        array[...] = fill
        return slot, receiver.pixels(pool.send(slot, array, 2))

    slot_a, a = batch(1)
    view = a[1:]
    del a
    gc.collect()
    slot_b, b = batch(2)
    assert slot_b != slot_a  # a view of the first batch still holds its slot
    assert torch.all(view == 1) and torch.all(b == 2)
    del view, b
    gc.collect()
    assert {batch(3)[0], batch(4)[0]} <= {slot_a, slot_b}  # both free again: reused, no new slot

    held = [batch(5) for _ in range(MAX_SLOTS + 2)]
    assert [slot for slot, _ in held].count(None) == 2  # all slots held: new memory, never a held slot
    assert all(torch.all(pixels == 5) for _, pixels in held)


def test_without_workers_each_batch_gets_new_memory():
    pool, receiver = SlotPool(3, 4, shared=False), SlotReceiver()
    slot, array = pool.take()
    assert slot is None
    array[...] = 9
    pixels = receiver.pixels(pool.send(slot, array, 2))
    assert pixels.shape == (2, 4, 4, 3) and torch.all(pixels == 9)
    assert pool.take()[1] is not array
