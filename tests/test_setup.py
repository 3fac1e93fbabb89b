"""textgan.train.setup: the one way to build a training setup refuses option combinations that cannot work,
before it starts any engine. (Every multi-rank test builds through it: tests/dist_util.setup_training.)"""

import pytest
import torch

from dist_util import C_DIM, tiny_cfg, tiny_networks
from textgan.runtime import Runtime
from textgan.train.setup import batch_condition, build_networks, build_training


def _runtime():
    return Runtime(0, 0, 1, 1, torch.device("cpu"), "none")  # no process group: nothing may need one here


def test_a_text_tower_and_a_plain_c_dim_are_exclusive():
    with pytest.raises(ValueError, match="text= or c_dim="):
        build_training(tiny_cfg(), _runtime(), text=object(), c_dim=C_DIM)


def test_contrastive_terms_need_the_text_tower():
    with pytest.raises(ValueError, match="need the text tower"):
        build_training(tiny_cfg("contrastive.C_it=1"), _runtime(), c_dim=C_DIM)


def test_init_from_loads_only_into_the_configs_networks(tmp_path):
    cfg = tiny_cfg()
    with pytest.raises(ValueError, match="init_from"):
        build_training(cfg, _runtime(), c_dim=C_DIM, networks=tiny_networks(cfg), init_from=str(tmp_path))


def test_build_networks_loads_the_given_weights_and_batches_carry_their_condition():
    cfg = tiny_cfg()
    G, D = build_networks(cfg, C_DIM)
    weights = {"G": {k: torch.full_like(v, 0.5) for k, v in G.state_dict().items()},
               "D": {k: torch.full_like(v, -0.5) for k, v in D.state_dict().items()}}
    G2, D2 = build_networks(cfg, C_DIM, weights)
    assert all(torch.equal(v, weights["G"][k]) for k, v in G2.state_dict().items())
    assert all(torch.equal(v, weights["D"][k]) for k, v in D2.state_dict().items())
    c = torch.arange(6.0).reshape(2, 3)
    assert batch_condition({"c": c, "image": None}) is c
