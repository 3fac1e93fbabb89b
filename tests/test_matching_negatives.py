"""loss.matching_negatives: which wrong caption the matching-aware D term pairs with each real image."""

import dataclasses
import os

import pytest
import torch

from textgan.config import LossConfig, UsageError, load_config
from textgan.losses import GANObjective, d_loss_fake
from textgan.losses.mismatch import NEGATIVES, mismatched_captions
from test_objective import setup

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo.yaml")


def captions():
    """Four unit-free caption embeddings whose nearest neighbours are known by hand:
    row 0 = [1, 0, 0], row 1 = [1, 0.1, 0] (nearest of 0 and 0 of it), row 2 = [0, 1, 0],
    row 3 = [0, 1, 0.5] (nearest of 2 and 2 of it); 0 and 2 are orthogonal."""
    return torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.5]])


def test_roll_is_the_next_samples_caption():
    c = captions()
    assert torch.equal(mismatched_captions(c, "roll"), c[[3, 0, 1, 2]])


def test_nearest_is_the_most_similar_other_caption():
    c = captions()
    assert torch.equal(mismatched_captions(c, "nearest"), c[[1, 0, 3, 2]])
    # scale does not matter (cosine), and the rows come back as given, not normalized
    assert torch.equal(mismatched_captions(c * torch.tensor([[2.0], [5.0], [1.0], [3.0]]), "nearest"),
                       (c * torch.tensor([[2.0], [5.0], [1.0], [3.0]]))[[1, 0, 3, 2]])


def test_nearest_never_picks_the_same_caption_and_falls_back_to_roll_without_another():
    c = captions()
    duplicated = torch.cat([c[:1], c[:1] * (1 + 1e-7), c[2:3]])  # rows 0 and 1: one caption
    out = mismatched_captions(duplicated, "nearest")
    assert torch.equal(out, duplicated[[2, 2, 0]])  # 0 and 1 get the only different caption (row 2)
    same = c[:1].repeat(3, 1)
    assert torch.equal(mismatched_captions(same, "nearest"), same)  # no wrong caption: roll's (the same)


def test_nearest_carries_the_gradient_of_the_chosen_rows():
    c = captions().requires_grad_(True)
    mismatched_captions(c, "nearest")[:, 0].sum().backward()
    assert torch.equal(c.grad[:, 0], torch.ones(4))  # each row is chosen exactly once here
    assert torch.equal(c.grad[:, 1:], torch.zeros(4, 2))


def test_bad_names_and_batches_fail_clearly():
    with pytest.raises(ValueError, match="loss.matching_negatives must be one of roll, nearest; got 'hardest'"):
        mismatched_captions(captions(), "hardest")
    with pytest.raises(ValueError, match="2 samples"):
        mismatched_captions(captions()[:1], "nearest")
    with pytest.raises(ValueError, match="matching_negatives"):
        GANObjective(dataclasses.replace(LossConfig(), matching_negatives="hardest"))
    with pytest.raises(UsageError, match="'loss.matching_negatives' is 'hardest'; allowed: roll, nearest"):
        load_config(DEMO, ["loss.matching_negatives=hardest"])
    assert load_config(DEMO, ["loss.matching_negatives=nearest"]).loss.matching_negatives == "nearest"
    assert NEGATIVES == ("roll", "nearest")


def test_d_main_matching_term_uses_the_nearest_captions():
    G, D, cfg, z, _, reals = setup(matching_aware=0.5, matching_negatives="nearest")
    c = captions()
    out = GANObjective(cfg).D_main(G, D, reals, c, z)
    with torch.no_grad():
        expected = d_loss_fake(D(reals, c[[1, 0, 3, 2]])).mean()
        rolled = d_loss_fake(D(reals, c.roll(1, 0))).mean()
    torch.testing.assert_close(out["Loss/D/matching"], expected)
    assert not torch.allclose(expected, rolled)  # the choice is visible in the loss
