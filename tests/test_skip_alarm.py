"""The skip-rate alarm judges the damaged fraction of the data, with real tars and real loader workers.

8 shards of 100 samples; 3 of them are cut inside their first sample's JPEG, so they serve nothing:
the data is exactly 37.5% damaged. With seed 0 and 2 workers, stream 0 draws shards 7, 5, 6, 2, ...
and stream 1 draws 2, 1, 3, 2, 5, 6, 6, 4, ...: with shards 2, 5 and 7 damaged, the old rule
(skipped / drawn) saw 200 skipped of 204 drawn after the first batch and stopped a run with
max_skip_rate=0.9.
"""

import json
import re

import pytest
from shard_fixture import _truncate_mid_jpeg, shard_ids, write_shards

from textgan.data import format as fmt
from textgan.data.loading.loader import SkipRateExceeded, train_loader

SHARDS, PER_SHARD, BATCH = 8, 100, 4
DAMAGED = (2, 5, 7)  # 300 of 800 samples: 37.5%
EPOCH_BATCHES = SHARDS * PER_SHARD // BATCH  # batches that draw as many samples as the data holds


def _write(tmp_path, damaged=DAMAGED):
    write_shards(tmp_path, SHARDS * PER_SHARD, PER_SHARD)
    first_ids = [ids[0] for ids in shard_ids(SHARDS * PER_SHARD, PER_SHARD)]
    for shard in damaged:  # cut inside the first JPEG: nothing of the shard stays readable
        _truncate_mid_jpeg(str(tmp_path / fmt.shard_name("train", shard)), first_ids[shard])
    return tmp_path


@pytest.fixture
def damaged_shards(tmp_path):
    return _write(tmp_path)


def _take(loader, n):
    """Draw n batches; the alarm's message if it fired, else None. Only the message leaves this
    function (no traceback), so nothing keeps the loader's iterator and its workers alive."""
    iterator = iter(loader)
    try:
        for _ in range(n):
            next(iterator)
    except SkipRateExceeded as alarm:
        return str(alarm)
    return None


@pytest.mark.multiproc
def test_a_tolerable_damage_keeps_a_run_going_for_epochs(damaged_shards):
    loader = train_loader(damaged_shards, BATCH, num_workers=2, max_skip_rate=0.9)
    assert _take(loader, 4 * EPOCH_BATCHES) is None
    assert loader.seen == 4 * EPOCH_BATCHES * BATCH
    # Skips are still counted every time a damaged shard is drawn (about 300 per 500 served)
    assert 0.3 < loader.skipped / loader.seen < 0.9
    assert loader.state_dict()["damage"] == {str(s): PER_SHARD for s in DAMAGED}


@pytest.mark.multiproc
def test_damage_beyond_the_limit_stops_with_the_real_fraction_and_the_shards(damaged_shards):
    loader = train_loader(damaged_shards, BATCH, num_workers=2, max_skip_rate=0.3)
    message = _take(loader, 4 * EPOCH_BATCHES)
    assert message is not None
    # 0.3 lies between 2 and 3 damaged shards: it fires once all three are known, with the exact figure
    assert "at least 300 of the 800 samples" in message and "(37.5%)" in message, message
    assert "max_skip_rate=0.3" in message and f"shards/build.py verify {damaged_shards}" in message
    for shard in DAMAGED:
        assert f"{fmt.shard_name('train', shard)} 100 of 100" in message
    assert f"skipped {loader.skipped} of {loader.skipped + loader.seen} samples drawn" in message
    assert loader.batches <= 4  # the first visits of both streams already met all three


@pytest.mark.multiproc
def test_a_lower_limit_fires_with_what_is_known_so_far(damaged_shards):
    message = _take(train_loader(damaged_shards, BATCH, num_workers=2, max_skip_rate=0.2), 4 * EPOCH_BATCHES)
    assert re.search(r"at least (200|300) of the 800 samples .*\((25\.0|37\.5)%\)", message or ""), message


def test_one_corrupt_sample_in_big_data_does_not_fire_at_its_first_read(tmp_path):
    # The stream's first shard (7) holds the one corrupt sample: the old rule saw 1 of 100 = 1%.
    write_shards(tmp_path, SHARDS * PER_SHARD, PER_SHARD, corrupt=[750])
    loader = train_loader(tmp_path, BATCH, num_workers=0, max_skip_rate=0.004)  # data: 1 of 800 = 0.125%
    assert _take(loader, 3 * EPOCH_BATCHES) is None
    assert loader.skipped >= 1 and loader.state_dict()["damage"] == {"7": 1}
    strict = train_loader(tmp_path, BATCH, num_workers=0, max_skip_rate=0.001)  # below 0.125%: it fires
    message = _take(strict, 3 * EPOCH_BATCHES)
    assert message and "at least 1 of the 800 samples" in message and "train-000007.tar 1 of 100" in message


@pytest.mark.multiproc
def test_a_resumed_loader_keeps_what_the_alarm_knew(tmp_path):
    # 7 is stream 0's first shard and is not drawn again for a long time; 4 and 0 come in stream 1's
    # eighth and ninth visits (stream 1 draws 2, 1, 3, 2, 5, 6, 6, 4, 0, 3, 7, ...). A loader resumed in
    # between fires at the same batch only if its state kept what was learnt about shard 7.
    shards = _write(tmp_path, damaged=(0, 4, 7))
    uninterrupted = train_loader(shards, BATCH, num_workers=2, max_skip_rate=0.3)
    assert _take(uninterrupted, 8 * EPOCH_BATCHES) is not None
    fired_at = uninterrupted.batches
    first = train_loader(shards, BATCH, num_workers=2, max_skip_rate=0.3)
    assert _take(first, fired_at // 2) is None
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it
    assert state["damage"] == {"7": 100}
    resumed = train_loader(shards, BATCH, num_workers=2, max_skip_rate=0.3, state=state)
    assert _take(resumed, 8 * EPOCH_BATCHES) is not None
    assert resumed.batches == fired_at  # the same batch as without the interruption
    assert (resumed.seen, resumed.skipped) == (uninterrupted.seen, uninterrupted.skipped)
