"""The streaming loader on tiny real shards (16 px, tens of samples) written by tests/shard_fixture.py."""

import json
import logging

import pytest
import torch

from shard_fixture import caption_text, pixel_colour, shard_ids, truncated_survivors, write_shards
from textgan.data import format as fmt
from textgan.data.decode import to_float_image
from textgan.data.loading.loader import SkipRateExceeded, eval_loader, train_loader
from textgan.errors import UsageError


def _take(loader, k):
    it = iter(loader)
    return [next(it) for _ in range(k)]


def _assert_same_batches(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g["key"] == e["key"]
        assert g["caption"] == e["caption"] and g["caption_alt"] == e["caption_alt"]
        assert torch.equal(g["pixels"], e["pixels"])


def _ids(batches):
    return [i for b in batches for i in b["image_id"].tolist()]


def _assert_sample_consistent(batch, i):
    """Pixels, key, captions and features of row i all belong to the row's image id."""
    image_id = int(batch["image_id"][i])
    assert batch["key"][i] == fmt.sample_key(image_id)
    expected = torch.tensor(pixel_colour(image_id), dtype=torch.float32) / 127.5 - 1
    image = to_float_image(batch["pixels"][i])
    assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=3 / 127.5), image_id
    spread = image.amax(dim=(1, 2)) - image.amin(dim=(1, 2))
    assert float(spread.max()) < 8 / 127.5  # one solid colour per channel, not a mix of images
    index, alt = int(batch["caption_index"][i]), int(batch["caption_alt_index"][i])
    assert batch["caption"][i] == caption_text(image_id, index)
    assert batch["caption_alt"][i] == caption_text(image_id, alt)
    return image_id, index, alt


def test_batches_hold_each_samples_pixels_captions_and_features(tmp_path):
    write_shards(tmp_path, 30, 8, captions_per_image=3, features=True)
    batches = _take(train_loader(tmp_path, 6, seed=5, num_workers=0), 20)
    indices_drawn = set()
    for batch in batches:
        assert batch["pixels"].dtype == torch.uint8 and batch["pixels"].shape == (6, 16, 16, 3)
        image = to_float_image(batch["pixels"])
        assert image.dtype == torch.float32 and image.shape == (6, 3, 16, 16)
        assert float(image.min()) >= -1 and float(image.max()) <= 1
        assert batch["image_id"].dtype == torch.int64
        for key in ("clip_img", "clip_txt", "clip_txt_alt"):
            assert batch[key].shape == (6, 8) and batch[key].dtype == torch.float32
        assert batch["perceptual"].shape == (6, 4)
        for i in range(6):
            image_id, index, alt = _assert_sample_consistent(batch, i)
            assert alt != index  # three captions: the alternative is always another one
            assert torch.all(batch["clip_img"][i] == image_id)
            assert torch.all(batch["clip_txt"][i] == image_id * 10 + index)
            assert torch.all(batch["clip_txt_alt"][i] == image_id * 10 + alt)
            assert torch.all(batch["perceptual"][i] == -image_id)
            indices_drawn.add((image_id, index))
    # 120 accesses to 30 images: captions are drawn per access, so images come with several captions.
    images_with_several_captions = {i for i, _ in indices_drawn if sum(j == i for j, _ in indices_drawn) > 1}
    assert len(images_with_several_captions) >= 10


def test_single_caption_pairs_with_itself_and_shards_without_features_give_no_feature_keys(tmp_path):
    write_shards(tmp_path, 12, 4, captions_per_image=1)
    batch = _take(train_loader(tmp_path, 5, num_workers=0), 1)[0]
    assert batch["caption"] == batch["caption_alt"]
    assert batch["caption_index"].tolist() == batch["caption_alt_index"].tolist() == [0] * 5
    assert not {"clip_img", "clip_txt", "clip_txt_alt", "perceptual"} & set(batch)
    for i in range(5):
        _assert_sample_consistent(batch, i)


@pytest.mark.parametrize("num_workers", [0, pytest.param(2, marks=pytest.mark.multiproc)])
def test_training_stream_is_deterministic_for_seed_and_rank(tmp_path, num_workers):
    write_shards(tmp_path, 40, 8)
    rng_before = torch.get_rng_state()

    def first(**kw):
        return _take(train_loader(tmp_path, 4, num_workers=num_workers, **kw), 6)

    reference = first(seed=3)
    _assert_same_batches(first(seed=3), reference)
    assert _ids(first(seed=4)) != _ids(reference)
    rank0, rank1 = first(seed=3, rank=0, world_size=2), first(seed=3, rank=1, world_size=2)
    assert _ids(rank0) != _ids(rank1)
    # The loader keeps its randomness to itself: the training's global RNG is untouched.
    assert torch.equal(torch.get_rng_state(), rng_before)


@pytest.mark.multiproc
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_workers_survive_the_signals_a_preemption_or_ctrl_c_sends_to_the_whole_job(tmp_path, signame):
    """Slurm sends SIGTERM to every process of a preempted job; Ctrl-C sends SIGINT to the whole
    foreground process group. The workers must live on until the trainer's save at its next step."""
    import os
    import signal
    import time

    import psutil

    write_shards(tmp_path, 40, 8)
    reference = _take(train_loader(tmp_path, 4, seed=3, num_workers=2), 8)
    before = {p.pid for p in psutil.Process().children()}
    it = iter(train_loader(tmp_path, 4, seed=3, num_workers=2))
    got = [next(it) for _ in range(2)]
    workers = [p for p in psutil.Process().children() if p.pid not in before]  # this loader's own workers
    assert len(workers) == 2
    for worker in workers:
        os.kill(worker.pid, getattr(signal, signame))
    time.sleep(0.5)
    assert all(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    got += [next(it) for _ in range(6)]  # the trainer carries on to its next step boundary
    _assert_same_batches(got, reference)


@pytest.mark.multiproc
def test_resume_with_two_workers_continues_with_the_uninterrupted_batches(tmp_path):
    write_shards(tmp_path, 40, 8, corrupt=[5, 21])
    loader = train_loader(tmp_path, 3, seed=7, num_workers=2)
    it = iter(loader)
    _ = [next(it) for _ in range(5)]  # odd: the resumed run must start with worker 1's stream
    state = json.loads(json.dumps(loader.state_dict()))  # as a checkpoint would store it
    uninterrupted = [next(it) for _ in range(6)]  # same iterator: workers had prefetched ahead

    resumed = train_loader(tmp_path, 3, seed=7, num_workers=2, state=state)
    _assert_same_batches(_take(resumed, 6), uninterrupted)
    assert state["batches"] == 5 and state["seen"] == 15
    assert (resumed.seen, resumed.skipped) == (loader.seen, loader.skipped)


def test_resume_in_process_keeps_skip_counts_exact_across_damaged_shards(tmp_path):
    write_shards(tmp_path, 32, 8, corrupt=[2, 9, 20], truncate_shard=2)  # shard 2: 4 of 8 readable
    loader = train_loader(tmp_path, 3, seed=1, num_workers=0)
    uninterrupted = _take(loader, 12)
    assert loader.skipped > 0  # the stream did cross damaged samples
    for k in range(1, 12):  # every cut, including ones inside a visit of the truncated shard
        head = train_loader(tmp_path, 3, seed=1, num_workers=0)
        _take(head, k)
        resumed = train_loader(tmp_path, 3, seed=1, num_workers=0, state=head.state_dict())
        _assert_same_batches(_take(resumed, 12 - k), uninterrupted[k:])
        assert (resumed.seen, resumed.skipped) == (loader.seen, loader.skipped), k


@pytest.mark.multiproc
def test_state_from_two_workers_continues_each_stream_when_resumed_with_one(tmp_path):
    write_shards(tmp_path, 32, 8)
    two = train_loader(tmp_path, 3, seed=2, num_workers=2)
    it = iter(two)
    _ = [next(it) for _ in range(4)]
    state = two.state_dict()
    after = [next(it) for _ in range(4)]  # batches 4..7: streams 0, 1, 0, 1
    one = train_loader(tmp_path, 3, seed=2, num_workers=0, state=state)
    # One worker serves stream 0 only, from where it stood: nothing consumed is replayed.
    _assert_same_batches(_take(one, 2), [after[0], after[2]])
    assert one.state_dict()["workers"][1] == state["workers"][1]  # stream 1 kept for later


def test_loader_state_of_another_layout_is_refused(tmp_path):
    write_shards(tmp_path / "a", 16, 4)
    write_shards(tmp_path / "b", 20, 4)
    saved = train_loader(tmp_path / "a", 2, seed=1, rank=0, world_size=2, num_workers=0)
    _take(saved, 2)
    state = saved.state_dict()
    for kw, named in [(dict(seed=2), "seed"), (dict(rank=1), "rank"), (dict(world_size=4), "world_size")]:
        args = dict(seed=1, rank=0, world_size=2, num_workers=0) | kw
        with pytest.raises(ValueError, match=f"{named}: saved"):
            train_loader(tmp_path / "a", 2, state=state, **args)
    with pytest.raises(ValueError, match="shards_digest"):
        train_loader(tmp_path / "b", 2, seed=1, world_size=2, num_workers=0, state=state)
    with pytest.raises(ValueError, match="not a textgan training-loader state"):
        train_loader(tmp_path / "a", 2, num_workers=0, state={"batches": 3})


def test_new_iterator_continues_where_the_last_stopped_and_supersedes_it(tmp_path):
    write_shards(tmp_path, 20, 5)
    reference = _take(train_loader(tmp_path, 3, num_workers=0), 3)
    loader = train_loader(tmp_path, 3, num_workers=0)
    old = iter(loader)
    first = next(old)
    _assert_same_batches(_take(loader, 2), reference[1:])
    _assert_same_batches([first], reference[:1])
    with pytest.raises(RuntimeError, match="superseded"):
        next(old)


@pytest.mark.multiproc
def test_eval_covers_every_sample_exactly_once_across_2_ranks_x_2_workers(tmp_path):
    write_shards(tmp_path, 37, 7)  # 6 shards, the last one short
    per_rank, shards = [], []
    for rank in (0, 1):
        loader = eval_loader(tmp_path, 4, rank=rank, world_size=2, num_workers=2)
        batches = list(loader)
        assert all(1 <= len(b["key"]) <= 4 for b in batches)
        for batch in batches:
            for i in range(len(batch["key"])):
                _assert_sample_consistent(batch, i)
        per_rank.append(_ids(batches))
        shards.append(set(loader.shards))
        assert loader.seen == len(per_rank[-1]) == loader.num_samples and loader.skipped == 0
    assert per_rank[0] and per_rank[1]
    assert sorted(per_rank[0] + per_rank[1]) == list(range(37))  # all, none twice
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 6


def test_eval_captions_depend_on_the_image_only(tmp_path):
    write_shards(tmp_path, 12, 3)
    whole = {i: c for b in eval_loader(tmp_path, 5, num_workers=0) for i, c in zip(_ids([b]), b["caption"])}
    split = {}
    for rank in (0, 1):
        for b in eval_loader(tmp_path, 2, rank=rank, world_size=2, num_workers=0):
            split.update(zip(_ids([b]), b["caption"]))
    assert split == whole and len(whole) == 12
    assert len(set(whole.values())) == 12 and len({c[-1] for c in whole.values()}) > 1  # not always caption 0


def test_eval_refuses_fewer_shards_than_ranks_x_workers(tmp_path):
    write_shards(tmp_path, 9, 3)  # 3 shards
    with pytest.raises(UsageError, match=r"3 shards cannot feed 2 ranks x 2 workers.*more shards"):
        eval_loader(tmp_path, 4, rank=0, world_size=2, num_workers=2)
    with pytest.raises(UsageError, match="3 shards cannot feed 4 ranks x 1 workers"):
        eval_loader(tmp_path, 4, rank=0, world_size=4, num_workers=0)  # 0 workers count as 1
    ids = [_ids(eval_loader(tmp_path, 4, rank=r, world_size=3, num_workers=0)) for r in range(3)]
    assert sorted(sum(ids, [])) == list(range(9))


def test_eval_skips_damaged_samples_counts_them_exactly_and_keeps_a_truncated_tars_head(tmp_path, caplog):
    write_shards(tmp_path, 40, 8, corrupt=[3, 30], truncate_shard=1)
    survivors = truncated_survivors(shard_ids(40, 8)[1])  # ids 8..11; 12..15 are lost
    loader = eval_loader(tmp_path, 6, num_workers=0)
    with caplog.at_level(logging.WARNING, logger="textgan.data.loading.loader"):
        ids = _ids(list(loader))
    expected = [i for i in range(40) if i not in (3, 30) and not 12 <= i <= 15]
    assert survivors == [8, 9, 10, 11] and sorted(ids) == expected
    assert (loader.skipped, loader.seen) == (2 + 4, 34)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert fmt.sample_key(3) in warned and "train-000001.tar" in warned


def test_training_skips_damaged_samples_and_serves_a_truncated_tars_head(tmp_path):
    write_shards(tmp_path, 40, 8, corrupt=[3, 30], truncate_shard=1)
    loader = train_loader(tmp_path, 5, seed=0, num_workers=0)
    ids = set(_ids(_take(loader, 30)))
    assert not ids & {3, 30, 12, 13, 14, 15}
    assert {8, 9, 10, 11} & ids  # the truncated shard's head is still drawn
    assert loader.seen == 150 and loader.skipped > 0


@pytest.mark.parametrize("damage, lost_per_pass", [(dict(corrupt=[4]), 1), (dict(truncate_shard=0), 5)])
def test_training_counts_the_damaged_samples_of_every_pass(tmp_path, damage, lost_per_pass):
    # One shard of 10, so every pass over it meets the damage: a corrupt sample, or a cut that
    # keeps 5 samples, leaves a partial 6th and loses 4.
    write_shards(tmp_path, 10, 10, **damage)
    good = 10 - lost_per_pass
    loader = train_loader(tmp_path, good, num_workers=0)
    for passes in (1, 5, 12):
        _take(loader, passes - loader.batches)  # each batch is one pass over the good samples
        # A bad sample after a pass's last good one is met (and counted) in the next batch.
        assert passes * lost_per_pass - 1 <= loader.skipped <= passes * lost_per_pass
        assert loader.seen == good * passes


def test_max_skip_rate_raises_when_exceeded_and_not_below(tmp_path):
    write_shards(tmp_path, 20, 5, corrupt=[1, 7, 12, 18])  # 20% damaged
    strict = train_loader(tmp_path, 4, num_workers=0, max_skip_rate=0.1)
    with pytest.raises(SkipRateExceeded, match=r"max_skip_rate=0\.1") as raised:
        _take(strict, 100)
    total = strict.seen + strict.skipped
    assert total >= 100  # no alarm before enough samples
    assert f"{strict.skipped} of {total} samples" in str(raised.value)

    lenient = train_loader(tmp_path, 4, num_workers=0, max_skip_rate=0.5)
    _take(lenient, 100)
    assert 0.1 < lenient.skipped / (lenient.seen + lenient.skipped) < 0.35


def test_a_directory_without_any_readable_sample_stops_with_an_error(tmp_path):
    write_shards(tmp_path, 6, 3, corrupt=range(6))
    with pytest.raises(RuntimeError, match="no shard of 2 has a readable sample"):
        _take(train_loader(tmp_path, 2, num_workers=0), 1)
