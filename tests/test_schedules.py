"""textgan.train.schedules: learning-rate multipliers at hand-picked points, and applying them."""

import math

import pytest
import torch

from textgan.errors import UsageError
from textgan.train.schedules import apply_lr, lr_multiplier


def test_constant_is_one_everywhere():
    assert [lr_multiplier("constant", k, 100, 10) for k in (0, 5, 100, 500)] == [1.0] * 4


def test_warmup_is_linear_then_flat():
    assert [lr_multiplier("warmup", k, 100, 10) for k in (0, 2.5, 5, 10, 60)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert lr_multiplier("warmup", 0, 100, 0) == 1.0  # no warm-up configured


def test_cosine_warms_up_then_anneals_to_zero_at_total_kimg():
    assert lr_multiplier("cosine", 5, 110, 10) == 0.5
    assert lr_multiplier("cosine", 10, 110, 10) == 1.0
    assert lr_multiplier("cosine", 35, 110, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))  # 0.853553
    assert lr_multiplier("cosine", 60, 110, 10) == pytest.approx(0.5)
    assert lr_multiplier("cosine", 110, 110, 10) == pytest.approx(0.0)
    assert lr_multiplier("cosine", 150, 110, 10) == pytest.approx(0.0)  # past the end: stays at 0
    assert lr_multiplier("cosine", 25, 100, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_bad_schedules_name_the_key():
    with pytest.raises(UsageError, match="optim.lr_schedule"):
        lr_multiplier("linear", 0, 100, 0)
    with pytest.raises(UsageError, match="total_kimg"):
        lr_multiplier("cosine", 20, 10, 10)
    with pytest.raises(UsageError, match="optim.warmup_kimg"):
        lr_multiplier("warmup", 0, 10, -1)


def test_apply_lr_sets_every_param_group():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=1.0, betas=(0.0, 0.99))
    assert apply_lr(optimizer, 0.002, 0.25) == 0.0005
    assert [group["lr"] for group in optimizer.param_groups] == [0.0005, 0.0005]
