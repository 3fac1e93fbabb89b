"""Checkpoints: exact resume in a fresh process group, atomic completion, pruning, weights-only loading.

Two spawned jobs of 2 ranks (module fixture `jobs`): the first trains 4 iterations, saving at 2; the
second starts new processes, loads that checkpoint and trains iterations 2 and 3 again. Each is done
for two stage layouts (G, D) = (0, 2) and (3, 1).
"""

import json
import os

import pytest
import torch

from dist_util import PARTITION_ALL, floats, run_ranks, setup_training, snapshot, tiny_cfg, tiny_networks
from textgan.train import checkpoint as ck

LAYOUTS = [(0, 2), (3, 1)]
CONFIG_HASH = "c0ffee"


def _cfg(g_stage, d_stage):
    return tiny_cfg(f"dist.zero_stage_G={g_stage}", f"dist.zero_stage_D={d_stage}")


def _train(setup, batches, state, n):
    from textgan.train.step import train_step

    return [floats(train_step(setup, batches, state)) for _ in range(n)]


def first_run(rank, world_size, root):
    """Iterations 0-3 in one go, with a checkpoint after iteration 1 (cur_nimg 8); then 3 more saves
    into another root with keep=2 next to leftovers of a crashed save."""
    out = {}
    for g_stage, d_stage in LAYOUTS:
        layout = f"G{g_stage}-D{d_stage}"
        cfg = _cfg(g_stage, d_stage)
        setup, batches, state = setup_training(cfg, ds_overrides=PARTITION_ALL)
        runtime, engines = setup.runtime, setup.engines
        _train(setup, batches, state, 2)
        at_save = snapshot(engines)
        path = ck.save_checkpoint(os.path.join(root, layout), f"{state.cur_nimg:06d}", engines,
                                  {"train_state": state.state_dict(), "config_hash": CONFIG_HASH}, keep=3,
                                  rank_state={"loader": batches.state_dict()})
        losses = _train(setup, batches, state, 2)
        out[layout] = {"path": path, "at_save": at_save, "losses": losses, "final": snapshot(engines)}

    pruned = os.path.join(root, "pruning")
    if rank == 0:  # leftovers: an interrupted save and a directory that never completed
        os.makedirs(os.path.join(pruned, "tmp-000099", "G"))
        os.makedirs(os.path.join(pruned, "000050", "D"))
    runtime.barrier()
    for tag in ("a", "b", "c"):
        ck.save_checkpoint(pruned, tag, engines, {"tag": tag}, keep=2)
    out["pruning"] = sorted(os.listdir(pruned))
    return out


def second_run(rank, world_size, root, saved):
    """New processes: load each layout's checkpoint and run iterations 2-3 again."""
    from textgan.train.step import TrainState

    out = {}
    loads = []
    real_load = torch.load

    def spy(*args, **kwargs):  # every torch.load in load_checkpoint, ours and DeepSpeed's
        loads.append((os.path.basename(str(args[0])), kwargs.get("weights_only")))
        return real_load(*args, **kwargs)

    for g_stage, d_stage in LAYOUTS:
        layout = f"G{g_stage}-D{d_stage}"
        cfg = _cfg(g_stage, d_stage)
        setup, batches, state = setup_training(cfg, ds_overrides=PARTITION_ALL)
        engines = setup.engines
        if layout == "G3-D1":  # a checkpoint of another layout is refused before anything is loaded
            try:
                ck.load_checkpoint(saved["G0-D2"]["path"], engines)
                out["wrong_layout"] = None
            except ValueError as e:
                out["wrong_layout"] = str(e)
        path = ck.find_latest(os.path.join(root, layout))
        torch.load = spy
        try:
            client = ck.load_checkpoint(path, engines)
        finally:
            torch.load = real_load
        state = TrainState()
        state.load_state_dict(client["train_state"])
        batches.load_state_dict(client["rank_state"]["loader"])
        loaded = snapshot(engines)
        losses = _train(setup, batches, state, 2)
        out[layout] = {"path": path, "client": client, "loaded": loaded, "losses": losses, "final": snapshot(engines),
                       "cur_nimg": state.cur_nimg}
    out["loads"] = loads
    return out


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("checkpoints"))
    first = run_ranks(first_run, root, args=(root,))
    paths = {layout: {"path": first[0][layout]["path"]} for layout in ("G0-D2", "G3-D1")}
    second = run_ranks(second_run, root, args=(root, paths))
    return root, first, second


def _equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.multiproc
@pytest.mark.parametrize("layout", ["G0-D2", "G3-D1"])
def test_resume_in_a_fresh_process_group_is_exact(jobs, layout):
    _, first, second = jobs
    for rank in (0, 1):
        before, after = first[rank][layout], second[rank][layout]
        assert after["path"] == before["path"]
        for part in ("G", "D", "G_ema"):
            _equal(after["loaded"][part], before["at_save"][part])  # weights and G_ema restored
            _equal(after["final"][part], before["final"][part])  # optimizers, RNG, data position too
        assert after["losses"] == before["losses"]  # iterations 2 and 3, every term, bitwise
        assert after["cur_nimg"] == 16 and after["client"]["config_hash"] == CONFIG_HASH
        assert after["client"]["rank_state"]["loader"] == {"next_sample": 4}


@pytest.mark.multiproc
def test_a_checkpoint_of_another_layout_is_refused(jobs):
    _, _, second = jobs
    message = second[0]["wrong_layout"]
    assert message is not None and "G_stage 0 (now 3)" in message and "--init-from" in message


@pytest.mark.multiproc
def test_loading_never_unpickles_arbitrary_objects(jobs):
    root, first, second = jobs
    loads = second[0]["loads"]
    names = {name for name, _ in loads}
    assert {"weights.pt", "client_state.pt", "rank00000.pt"} <= names
    assert any(n.endswith("optim_states.pt") for n in names) and any(n.endswith("model_states.pt") for n in names)
    assert all(weights_only is True for _, weights_only in loads), loads
    allowed = {f"{c.__module__}.{c.__qualname__}" for c in _ds_globals()}
    for layout in ("G0-D2", "G3-D1"):
        path = first[0][layout]["path"]
        for folder, _, files in os.walk(path):
            for name in files:
                if name.endswith(".pt"):
                    found = set(torch.serialization.get_unsafe_globals_in_checkpoint(os.path.join(folder, name)))
                    assert found <= allowed, (name, found)
                    if folder == path:  # our own files: plain tensors and containers only
                        assert not found, name


def _ds_globals():
    from textgan.train.engines import DS_CHECKPOINT_GLOBALS

    return DS_CHECKPOINT_GLOBALS


@pytest.mark.multiproc
def test_checkpoint_layout_marker_and_pruning(jobs):
    root, first, _ = jobs
    path = first[0]["G3-D1"]["path"]
    assert os.path.basename(path) == "000008"
    assert sorted(os.listdir(path)) == ["COMPLETE", "D", "G", "client_state.pt", "rank00000.pt", "rank00001.pt",
                                        "weights.pt"]
    marker = json.load(open(os.path.join(path, "COMPLETE")))
    assert (marker["tag"], marker["world_size"], marker["G_stage"], marker["D_stage"]) == ("000008", 2, 3, 1)
    assert open(os.path.join(os.path.dirname(path), "latest")).read() == "000008"
    # 3 saves with keep=2: the oldest and the leftovers of a crashed save are gone
    assert first[0]["pruning"] == ["b", "c", "latest"]
    assert ck.find_latest(os.path.join(root, "pruning")) == os.path.join(root, "pruning", "c")


@pytest.mark.multiproc
def test_load_weights_gives_plain_state_dicts_for_fresh_networks(jobs):
    _, first, _ = jobs
    for layout in ("G0-D2", "G3-D1"):
        saved = first[0][layout]
        weights = ck.load_weights(os.path.dirname(saved["path"]))  # a checkpoint root: its newest
        G, D = tiny_networks(tiny_cfg())
        G_ema, _ = tiny_networks(tiny_cfg())
        G.load_state_dict(weights["G"])
        D.load_state_dict(weights["D"])
        G_ema.load_state_dict(weights["G_ema"])
        for part, net in (("G", G), ("D", D), ("G_ema", G_ema)):
            _equal(net.state_dict(), saved["at_save"][part])
        assert all(v.dtype == torch.float32 for v in weights["G"].values() if v.is_floating_point())


# ---------------------------------------------------------------------- pure: finding checkpoints


def _fake_checkpoint(root, name, serial=None):
    os.makedirs(os.path.join(root, name))
    if serial is not None:
        with open(os.path.join(root, name, "COMPLETE"), "w") as f:
            json.dump({"format": ck.FORMAT, "tag": name, "serial": serial}, f)


def test_find_latest_ignores_incomplete_checkpoints(tmp_path):
    root = str(tmp_path)
    assert ck.find_latest(root) is None
    _fake_checkpoint(root, "000100", serial=1)
    _fake_checkpoint(root, "000200", serial=2)
    _fake_checkpoint(root, "000300")  # newest, but never completed
    _fake_checkpoint(root, "tmp-000400", serial=3)  # a marker inside tmp- does not count either
    assert ck.find_latest(root) == os.path.join(root, "000200")
    with open(os.path.join(root, "latest"), "w") as f:
        f.write("000300")  # a pointer to an incomplete checkpoint is not trusted
    assert ck.find_latest(root) == os.path.join(root, "000200")
    with open(os.path.join(root, "latest"), "w") as f:
        f.write("000100")
    assert ck.find_latest(root) == os.path.join(root, "000100")


def test_load_weights_explains_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete textgan checkpoint"):
        ck.load_weights(str(tmp_path))
    torch.save({"G": {}}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="expected the keys G, D, G_ema"):
        ck.load_weights(str(tmp_path / "weights.pt"))


def test_rng_states_round_trip_as_plain_data(tmp_path):
    import random

    import numpy as np

    state = ck.capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(3)  # move on
    ck.restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2])


def test_save_refuses_state_that_weights_only_loading_could_not_read():
    from types import SimpleNamespace

    with pytest.raises(TypeError, match=r"client_state\['cfg'\]\['x'\] is a SimpleNamespace"):
        ck._check_plain({"cfg": {"x": SimpleNamespace()}}, "client_state")
    ck._check_plain({"p": torch.zeros(1), "n": [1, 2.0, "a", None, (True,)]}, "client_state")


def test_save_refuses_bad_tags():
    for tag in ("", "latest", "tmp-1", "a/b", ".."):
        with pytest.raises(ValueError, match="checkpoint tag"):
            ck._check_tag(tag)
