"""textgan export / load_generator, and --init-from: weights leave and enter runs unchanged.

The slow tests train one tiny run through the real launcher (submitit local, DeepSpeed on gloo)
and export it; the fast ones check the file format's guards on hand-made files.
"""

import shutil
import subprocess
import sys

import pytest
import torch

from test_train_e2e import shards, stats_lines, submit  # noqa: F401  (shards is a fixture)
from textgan import cli
from textgan.config import load_config, to_yaml
from textgan.errors import UsageError
from textgan.export import FORMAT, build_nets, c_dim_of, load_generator, read_export

TOTAL_KIMG = 0.032  # two ticks of two iterations; each tick writes a checkpoint (000000.016, 000000.032)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shards):  # noqa: F811
    outdir = tmp_path_factory.mktemp("runs")
    proc = submit(outdir=outdir, shards=shards, total_kimg=TOTAL_KIMG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return outdir / "00000-demo"


def export(path, out, capsys=None):
    code = cli.main(["export", str(path), "--out", str(out)])
    return code, (capsys.readouterr() if capsys else None)


def checkpoint_weights(run):
    from textgan.train.checkpoint import load_weights

    return load_weights(str(run / "checkpoints"))


# ---------------------------------------------------------------------- export from a real run


@pytest.mark.slow
@pytest.mark.multiproc
def test_export_writes_G_ema_and_the_resolved_config_as_plain_data(run_dir, tmp_path, capsys):
    out = tmp_path / "G.pt"
    code, printed = export(run_dir, out, capsys)
    assert code == 0, printed.err
    assert str(out) in printed.out and "RANDOM weights" in printed.out  # the demo's random text tower

    data = torch.load(out, weights_only=True)  # plain types only
    assert data["format"] == FORMAT and data["version"] == 1
    assert data["config"] == (run_dir / "config.yaml").read_text()
    assert data["arch"] == "stylegan2" and data["c_dim"] == 128  # textgan-demo-clip embeds in 128-d
    assert data["text_encoder"] == {"model": "textgan-demo-clip", "pretrained": None, "random_weights": True}
    assert data["kimg"] == pytest.approx(TOTAL_KIMG) and data["tick"] == 2
    assert data["source"] == str(run_dir / "checkpoints" / "000000.032")
    expected = checkpoint_weights(run_dir)["G_ema"]
    assert data["G_ema"].keys() == expected.keys()
    for name, value in expected.items():
        assert data["G_ema"][name].dtype == (torch.float32 if value.is_floating_point() else value.dtype)
        assert torch.equal(data["G_ema"][name], value), name


@pytest.mark.slow
@pytest.mark.multiproc
def test_run_dir_checkpoints_root_and_checkpoint_dir_export_the_same(run_dir, tmp_path):
    paths = [run_dir, run_dir / "checkpoints", run_dir / "checkpoints" / "000000.032"]
    files = []
    for i, path in enumerate(paths):
        files.append(tmp_path / f"G{i}.pt")
        assert export(path, files[-1])[0] == 0
    loaded = [torch.load(f, weights_only=True) for f in files]
    for other in loaded[1:]:
        assert other["source"] == loaded[0]["source"] and other["config"] == loaded[0]["config"]
        assert all(torch.equal(other["G_ema"][k], v) for k, v in loaded[0]["G_ema"].items())


@pytest.mark.slow
@pytest.mark.multiproc
def test_load_generator_needs_no_deepspeed_and_reproduces_G_ema(run_dir, tmp_path):
    out = tmp_path / "G.pt"
    assert export(run_dir, out)[0] == 0
    result = tmp_path / "result.pt"
    script = f"""
import sys, torch
from textgan.export import load_generator
G, cfg = load_generator({str(out)!r})
g = torch.Generator().manual_seed(1)
z, c = torch.randn(4, G.z_dim, generator=g), torch.randn(4, G.c_dim, generator=g)
torch.save({{"img": G(z, c, noise_mode="const"), "training": G.training, "resolution": cfg.data.resolution,
            "requires_grad": any(p.requires_grad for p in G.parameters()),
            "deepspeed": sorted(m for m in sys.modules if m.split(".")[0] == "deepspeed")}}, {str(result)!r})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(result, weights_only=True)
    assert got["deepspeed"] == []
    assert got["training"] is False and got["requires_grad"] is False and got["resolution"] == 16

    # The same images from the network the training loop builds, with the checkpoint's G_ema.
    from textgan.train.setup import build_networks

    cfg = load_config(str(run_dir / "config.yaml"))
    G, _ = build_networks(cfg, 128)
    G.load_state_dict(checkpoint_weights(run_dir)["G_ema"])
    g = torch.Generator().manual_seed(1)
    z, c = torch.randn(4, G.z_dim, generator=g), torch.randn(4, G.c_dim, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(got["img"], G.eval()(z, c, noise_mode="const"))


@pytest.mark.slow
@pytest.mark.multiproc
def test_export_errors_exit_2_and_name_the_problem(run_dir, tmp_path, capsys):
    code, printed = export(tmp_path / "nope", tmp_path / "G.pt", capsys)
    assert code == 2 and "does not exist" in printed.err

    incomplete = tmp_path / "incomplete"  # a run whose only checkpoint never got its COMPLETE marker
    shutil.copytree(run_dir / "checkpoints" / "000000.032", incomplete / "checkpoints" / "tmp-000000.032")
    (incomplete / "checkpoints" / "tmp-000000.032" / "COMPLETE").unlink()
    shutil.copy(run_dir / "config.yaml", incomplete / "config.yaml")
    code, printed = export(incomplete, tmp_path / "G.pt", capsys)
    assert code == 2 and "no complete checkpoint" in printed.err

    orphan = tmp_path / "orphan" / "checkpoints" / "000000.032"  # a checkpoint copied away from its run
    shutil.copytree(run_dir / "checkpoints" / "000000.032", orphan)
    code, printed = export(orphan, tmp_path / "G.pt", capsys)
    assert code == 2 and "config.yaml is missing" in printed.err
    assert not (tmp_path / "G.pt").exists()

    weights = run_dir / "checkpoints" / "000000.032" / "weights.pt"  # checkpoint weights are not an export
    with pytest.raises(UsageError, match="textgan export RUN"):
        load_generator(str(weights))


# ---------------------------------------------------------------------- --init-from


@pytest.mark.slow
@pytest.mark.multiproc
def test_init_from_starts_a_new_run_with_the_source_weights(run_dir, tmp_path, shards):  # noqa: F811
    # Learning rates 0 and an EMA that keeps all of G_ema (no ramp-up, an enormous half-life): training
    # then changes no weight, so the new run's checkpoint shows exactly what it started from.
    frozen = ["optim.G_lr=0", "optim.D_lr=0", "schedule.ema_rampup=null", "schedule.ema_kimg=1e9"]
    args = ["--init-from", str(run_dir / "checkpoints")] + [x for kv in frozen for x in ("--set", kv)]
    proc = submit(*args, outdir=tmp_path, shards=shards, total_kimg=0.016)
    assert proc.returncode == 0, proc.stderr[-3000:]
    new_run = tmp_path / "00000-demo"
    assert len(stats_lines(new_run)) == 1  # it trained (one tick), in a new run directory
    source, started = checkpoint_weights(run_dir), checkpoint_weights(new_run)
    for net in ("G", "D", "G_ema"):
        assert started[net].keys() == source[net].keys()
        # w_avg, a buffer, follows the new run's latents (Gmain updates it); everything else is as loaded.
        differ = [k for k, v in source[net].items() if not torch.equal(started[net][k], v)]
        assert differ == (["mapping.w_avg"] if net != "D" else []), (net, differ)
    # (Without --init-from the new run would hold its seed's initialisation, which the source run
    # moved away from in four Adam steps at lr 0.0025: these equalities would fail.)


# ---------------------------------------------------------------------- fast: format guards


TINY_MODEL = ["data.shards=x", "data.resolution=16", "model.channel_base=512", "model.channel_max=32",
              "model.z_dim=16", "model.w_dim=16", "model.mapping_layers=1"]


@pytest.mark.parametrize("c_embed_layers", [0, 2])
@pytest.mark.parametrize("arch", ["stylegan2", "cgan"])
def test_c_dim_is_recovered_from_the_generator_weights(arch, c_embed_layers):
    extra = ["model.arch=cgan", "loss.pl_weight=0", "loss.style_mixing_prob=0"] if arch == "cgan" else []
    cfg = load_config(None, TINY_MODEL + extra + [f"model.c_embed_layers={c_embed_layers}"])
    for c_dim in (24, 40):  # w_dim 16: the embedding MLP's width differs from c_dim
        G, _ = build_nets(cfg, c_dim)
        assert c_dim_of(arch, G.state_dict(), cfg.model.z_dim) == c_dim


def _exported_file(tmp_path, **changes):
    cfg = load_config(None, TINY_MODEL)
    G, _ = build_nets(cfg, 24)
    data = {"format": FORMAT, "version": 1, "config": to_yaml(cfg), "arch": "stylegan2", "c_dim": 24,
            "G_ema": G.state_dict(), **changes}
    path = tmp_path / "G.pt"
    torch.save(data, path)
    return str(path), G


def test_a_well_formed_file_loads_strictly(tmp_path):
    path, G = _exported_file(tmp_path)
    loaded, cfg = load_generator(path)
    assert cfg.model.w_dim == 16 and not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in G.state_dict().items())


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("not a torch file"), "not a textgan generator file"),
    (lambda p: torch.save({"a": 1}, p), "no format 'textgan-generator'"),
    (lambda p: torch.save({"G": {}, "D": {}, "G_ema": {}}, p), "textgan export RUN"),
    (lambda p: torch.save(torch.nn.Linear(2, 2), p), "weights_only"),  # a pickled module is never unpickled
])
def test_files_that_are_not_exports_are_refused(tmp_path, make, message):
    path = tmp_path / "file.pt"
    make(path)
    with pytest.raises(UsageError, match=message):
        load_generator(str(path))


def test_newer_versions_and_mismatched_weights_are_refused(tmp_path):
    path, _ = _exported_file(tmp_path, version=2)
    with pytest.raises(UsageError, match="upgrade textgan"):
        read_export(path)
    path, _ = _exported_file(tmp_path, c_dim=12)  # the weights were built for 24
    with pytest.raises(UsageError, match="do not match the network its config describes"):
        load_generator(path)
    with pytest.raises(UsageError, match="is a directory"):
        load_generator(str(tmp_path))
