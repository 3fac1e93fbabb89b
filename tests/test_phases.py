"""The phases declared once (textgan.losses.phases) and the objective's one entry point, phase_loss."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from test_objective import setup
from textgan.losses import GANObjective
from textgan.losses.objective import PL_MEAN_KEY
from textgan.losses.phases import Phase, PhaseInputs
from textgan.train.step import phases_due


def _declared(objective, G_reg_interval=4, D_reg_interval=16):
    return [(p.name, p.network, p.kind, p.interval) for p in objective.phases(G_reg_interval, D_reg_interval)]


def test_the_phases_of_an_iteration_name_their_network_kind_and_interval():
    _, _, cfg, *_ = setup(pl_weight=2.0, r1_gamma=10.0)
    assert _declared(GANObjective(cfg)) == [("Gmain", "G", "main", 1), ("Greg", "G", "reg", 4),
                                            ("Dmain", "D", "main", 1), ("Dreg", "D", "reg", 16)]
    # a zero weight or a zero interval leaves the regularizer out
    assert _declared(GANObjective(dataclasses.replace(cfg, pl_weight=0.0))) == [
        ("Gmain", "G", "main", 1), ("Dmain", "D", "main", 1), ("Dreg", "D", "reg", 16)]
    assert _declared(GANObjective(cfg), D_reg_interval=0) == [
        ("Gmain", "G", "main", 1), ("Greg", "G", "reg", 4), ("Dmain", "D", "main", 1)]


def test_phases_due_runs_each_regularizer_every_interval_from_the_first_iteration():
    _, _, cfg, *_ = setup(pl_weight=2.0, r1_gamma=10.0)
    train_cfg = SimpleNamespace(schedule=SimpleNamespace(G_reg_interval=4, D_reg_interval=16))
    names = [[p.name for p in phases_due(train_cfg, GANObjective(cfg), i)] for i in range(17)]
    assert names[0] == names[16] == ["Gmain", "Greg", "Dmain", "Dreg"]
    assert [i for i, n in enumerate(names) if "Greg" in n] == [0, 4, 8, 12, 16]
    assert [i for i, n in enumerate(names) if "Dreg" in n] == [0, 16]
    assert all(n[0] == "Gmain" and "Dmain" in n for n in names)


@pytest.mark.parametrize("network, kind, interval", [("E", "main", 1), ("G", "lazy", 1), ("D", "reg", 0)])
def test_a_phase_must_name_a_network_a_kind_and_a_positive_interval(network, kind, interval):
    with pytest.raises(ValueError, match="not a phase"):
        Phase("X", network, kind, interval)


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_phase_loss_routes_each_phase_to_its_loss_with_the_phase_interval():
    G, D, cfg, z, c, reals = setup(pl_weight=2.0, r1_gamma=10.0, matching_aware=1.0, weight_decay=0.01)
    objective = GANObjective(cfg)
    c_G = -c  # G's own condition (text noise), D's stays c
    inputs = PhaseInputs(G_fn=G, D_fn=D, z=z, c=c, reals=reals, c_G=c_G, G_module=G, D_module=D,
                         pl_mean=torch.tensor([0.3]))
    phases = {p.name: p for p in objective.phases(4, 16)}

    _same(objective.phase_loss(phases["Gmain"], inputs), objective.G_main(G, D, z, c_G, c_for_D=c, G_module=G))
    _same(objective.phase_loss(phases["Dmain"], inputs), objective.D_main(G, D, reals, c, z, D_module=D, c_G=c_G))
    _same(objective.phase_loss(phases["Dreg"], inputs), objective.D_reg(D, reals, c, interval=16))
    torch.manual_seed(5)  # the path length's image-space noise
    got = objective.phase_loss(phases["Greg"], inputs)
    torch.manual_seed(5)
    expected, new_mean = objective.G_reg(G, z, c, torch.tensor([0.3]), interval=4)
    _same(got, expected)
    assert float(got[PL_MEAN_KEY]) == float(new_mean.reshape(-1)[0]) != 0.3  # the mean the caller keeps
    # the interval scales the lazy regularizers: Dreg every 8 weighs half of every 16
    every8 = objective.phase_loss(dataclasses.replace(phases["Dreg"], interval=8), inputs)
    torch.testing.assert_close(every8["total"] * 2, objective.phase_loss(phases["Dreg"], inputs)["total"])


def test_gmain_without_a_condition_of_its_own_generates_from_ds():
    G, D, cfg, z, c, _ = setup()
    objective = GANObjective(cfg)
    gmain = objective.phases(4, 16)[0]
    out = objective.phase_loss(gmain, PhaseInputs(G_fn=G, D_fn=D, z=z, c=c))
    _same(out, objective.G_main(G, D, z, c))
