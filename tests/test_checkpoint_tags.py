"""Checkpoint tags: one per save, readable as kimg, ordered by progress next to the older whole-kimg tags.

The run test trains with kimg_per_tick 0.016 (< 1) through launchers/submit.py --local: every tick
saves, and keep_checkpoints=3 must keep three distinct checkpoints (whole-kimg tags made every save of
kimg 0 replace the previous one).
"""

import json
import os
import random

import pytest
import torch

from test_train_e2e import shards, submit  # noqa: F401  (shards is a fixture: 16-px shapes train shards)
from textgan.train.checkpoint import checkpoint_tag, complete_checkpoints, find_latest, load_weights, tag_nimg


def test_tags_count_images_and_read_as_kimg():
    assert checkpoint_tag(0) == "000000.000"
    assert checkpoint_tag(16) == "000000.016"
    assert checkpoint_tag(12_345) == "000012.345"
    assert checkpoint_tag(25_000_000) == "025000.000"
    assert [tag_nimg(checkpoint_tag(n)) for n in (0, 16, 12_345, 25_000_000)] == [0, 16, 12_345, 25_000_000]
    assert len({checkpoint_tag(n) for n in range(0, 4000, 8)}) == 500  # every save of a kimg its own tag
    with pytest.raises(ValueError, match="cur_nimg"):
        checkpoint_tag(-1)


def test_old_whole_kimg_tags_still_read_and_order_by_progress():
    assert tag_nimg("000012") == 12_000 and tag_nimg("000000") == 0
    assert tag_nimg("fid10k") is None and tag_nimg("tmp-000012") is None and tag_nimg("000012.5") is None
    tags = ["000009.999", "000010", "000010.500", "000011", "000100", "001000.008", "000012.345"]
    by_progress = sorted(tags, key=tag_nimg)
    assert by_progress == ["000009.999", "000010", "000010.500", "000011", "000012.345", "000100", "001000.008"]
    shuffled = tags[:]
    random.Random(0).shuffle(shuffled)
    assert sorted(shuffled) == by_progress  # zero-padded: as text the same order, for ls and globs


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_run_with_sub_kimg_ticks_keeps_its_newest_checkpoints_apart(tmp_path, shards):  # noqa: F811
    proc = submit("--set", "schedule.keep_checkpoints=3", "--set", "metrics.metrics_ticks=0",
                  outdir=tmp_path, shards=shards, total_kimg=0.080)  # 5 ticks of 16 images, a save each
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt_root = os.path.join(tmp_path, "00000-demo", "checkpoints")
    complete = [path for _, path in complete_checkpoints(ckpt_root)]
    assert [os.path.basename(p) for p in complete] == ["000000.048", "000000.064", "000000.080"]
    assert sorted(os.listdir(ckpt_root)) == ["000000.048", "000000.064", "000000.080", "latest"]
    assert find_latest(ckpt_root) == complete[-1]
    for path, nimg in zip(complete, (48, 64, 80)):  # each holds its own state
        marker = json.load(open(os.path.join(path, "COMPLETE")))
        assert marker["tag"] == checkpoint_tag(nimg) and marker["finite"] is True
        client = torch.load(os.path.join(path, "client_state.pt"), weights_only=True)
        assert client["state"]["cur_nimg"] == nimg
    first, last = load_weights(complete[0])["G"], load_weights(complete[-1])["G"]
    assert any(not torch.equal(first[k], last[k]) for k in first)
