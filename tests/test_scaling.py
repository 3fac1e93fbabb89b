"""How a recipe's batch follows the ranks (textgan.scaling): global batch, accumulation, EMA and learning
rates for both rules on several worlds; the error that names the `--set` fixes; what a resume compares;
and the README's cluster commands, which must run as printed (here with --dry-run, without Slurm on PATH).
"""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from shard_fixture import write_shards
from textgan.config import load_config, to_yaml
from textgan.errors import UsageError
from test_train_e2e import shards, submit  # noqa: F401  (shards is a fixture)
from textgan.scaling import scale_to_world, world_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO256 = os.path.join(ROOT, "configs", "coco256.yaml")
REQUIRED = ["data.shards=shards/x", "data.resolution=32", "schedule.batch_size=32", "schedule.batch_gpu=4",
            "schedule.ema_kimg=10"]


def config(*overrides):
    return load_config(None, REQUIRED + list(overrides))


@pytest.mark.parametrize("world, accumulation", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_global_keeps_the_batch_and_divides_it_over_the_ranks(world, accumulation):
    scaled = world_batch(config(), world)
    assert (scaled.batch_size, scaled.accumulation, scaled.ema_kimg, scaled.G_lr) == (32, accumulation, 10.0, 0.0025)


@pytest.mark.parametrize("world, batch, accumulation", [
    (1, 32, 8), (2, 32, 4), (3, 36, 3), (8, 32, 1), (16, 64, 1), (32, 128, 1)])
def test_per_rank_keeps_batch_gpu_and_rounds_the_global_batch_up_to_the_ranks(world, batch, accumulation):
    scaled = world_batch(config("schedule.batch_scaling=per_rank"), world)
    assert (scaled.batch_size, scaled.accumulation, scaled.batch_gpu) == (batch, accumulation, 4)
    assert scaled.batch_size == scaled.batch_gpu * world * scaled.accumulation
    assert scaled.ema_kimg == pytest.approx(10 * batch / 32)  # StyleGAN2-ADA: ema_kimg = batch x 10 / 32
    assert (scaled.G_lr, scaled.D_lr) == (0.0025, 0.0025)  # optim.lr_scaling none: lr unchanged


@pytest.mark.parametrize("lr_scaling, factor", [("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)])
def test_learning_rates_follow_optim_lr_scaling(lr_scaling, factor):
    cfg = config("schedule.batch_scaling=per_rank", f"optim.lr_scaling={lr_scaling}", "optim.D_lr=0.002")
    scaled = world_batch(cfg, 32)  # batch 32 -> 128
    assert (scaled.G_lr, scaled.D_lr) == pytest.approx((0.0025 * factor, 0.002 * factor))


def test_ref_batch_size_is_the_batch_the_ema_and_lr_are_given_at():
    scaled = world_batch(config("schedule.ref_batch_size=64", "optim.lr_scaling=linear"), 1)
    assert (scaled.batch_size, scaled.ema_kimg, scaled.G_lr) == (32, 5.0, 0.00125)


def test_scaling_writes_the_effective_values_and_scaling_again_changes_nothing(tmp_path):
    cfg = config("schedule.batch_scaling=per_rank", "optim.lr_scaling=linear")
    scale_to_world(cfg, 32)
    assert (cfg.schedule.batch_size, cfg.schedule.ref_batch_size, cfg.schedule.ema_kimg) == (128, 128, 40.0)
    assert (cfg.optim.G_lr, cfg.optim.D_lr) == (0.01, 0.01)
    # what the job receives and the run dir's config.yaml records, loaded again (a requeued attempt,
    # or the file used as a recipe): the same values, and scaling it again on that world is a no-op
    recorded = tmp_path / "config.yaml"
    recorded.write_text(to_yaml(cfg))
    again = load_config(str(recorded))
    scaled = scale_to_world(again, 32)
    assert (scaled.batch_size, scaled.accumulation, scaled.ema_kimg, scaled.G_lr) == (128, 1, 40.0, 0.01)
    assert to_yaml(again) == to_yaml(cfg)


def test_an_indivisible_global_batch_names_each_set_fix_and_what_it_changes():
    cfg = load_config(COCO256, ["schedule.batch_scaling=global"])
    with pytest.raises(UsageError) as info:
        world_batch(cfg, 32)
    assert info.value.exit_code == 2
    assert str(info.value) == (
        "config key 'schedule.batch_size' (32) must be a multiple of batch_gpu x ranks = 4 x 32 = 128 with "
        "schedule.batch_scaling=global (the global batch is fixed). Any one of these fixes it:\n"
        "  --set schedule.batch_scaling=per_rank  -> global batch 128, accumulation 1, "
        "ema_kimg 40 (scaled from batch 32)\n"
        "  --set schedule.batch_gpu=1  -> global batch 32 (unchanged), accumulation 1\n"
        "  --set schedule.batch_size=128  -> global batch 128, accumulation 1, ema_kimg 10 (as given)")
    # every fix named does what its line says
    for fix, batch, accumulation in re.findall(r"--set (\S+)  -> global batch (\d+).*?, accumulation (\d+)",
                                               str(info.value)):
        scaled = world_batch(load_config(COCO256, ["schedule.batch_scaling=global", fix]), 32)
        assert (scaled.batch_size, scaled.accumulation) == (int(batch), int(accumulation)), fix


def test_the_batch_gpu_fix_is_left_out_when_no_smaller_micro_batch_divides():
    with pytest.raises(UsageError) as info:
        world_batch(config("schedule.batch_size=4", "schedule.batch_gpu=4"), 8)  # 4 images cannot cover 8 ranks
    fixes = [line.split()[1] for line in str(info.value).splitlines()[1:]]
    assert fixes == ["schedule.batch_scaling=per_rank", "schedule.batch_size=32"]


def test_a_resume_on_another_world_warns_unless_the_global_batch_is_unchanged():
    # the loop warns when the checkpoint's config hash differs from the resumed config's
    from textgan.train.loop import _RESUME_FREE_KEYS
    from textgan.train.rundir import config_hash

    def resume_hash(world, *overrides):
        cfg = load_config(COCO256, list(overrides))
        scale_to_world(cfg, world)
        return config_hash(cfg, ignore=_RESUME_FREE_KEYS)

    assert resume_hash(4) == resume_hash(8)  # per_rank: global batch 32 on both: resumes silently
    assert resume_hash(8) != resume_hash(16)  # 32 -> 64 images per step: warned
    assert resume_hash(2, "schedule.batch_scaling=global") == resume_hash(8, "schedule.batch_scaling=global")


# ---------------------------------------------------------------------- the README's commands


def readme_commands(heading: str) -> list:
    """The `python launchers/...` commands of the first bash block after `heading`, as argument lists."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text[text.index(heading):]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start:section.index("```", start)].replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("python launchers/")]


# (config, world size, global batch) each README cluster command must print
EXPECTED = {"configs/coco256.yaml": (32, 128), "configs/demo.yaml": (8, 128),
            "configs/research/modified1.yaml": (4, 32)}
# each run with --dry-run (the submission and its --dry-run twin are one command then)
CLUSTER = list({tuple(c if "--dry-run" in c else c + ["--dry-run"]): None
                for c in readme_commands("## Running on your cluster") + readme_commands("### Sweeps")
                if "--local" not in c and "--config" in c})


@pytest.fixture(scope="module")
def login_node(tmp_path_factory):
    """A directory laid out as the README's login node: the repository's configs and launchers, the COCO
    shards the recipes name (tiny ones), and the VGG weights file the research recipes name (a placeholder:
    the dry run checks that it exists; the job would load it)."""
    where = tmp_path_factory.mktemp("login")
    for name in ("configs", "launchers"):
        os.symlink(os.path.join(ROOT, name), where / name)
    write_shards(where / "shards" / "coco256-train", 4, 4, resolution=256)
    write_shards(where / "shards" / "coco256-val", 4, 4, resolution=256, split="val")
    (where / "weights").mkdir()
    (where / "weights" / "vgg16-397923af.pth").write_bytes(b"")
    return where


def test_the_readme_shows_the_cluster_commands_this_file_runs():
    assert sorted({c[c.index("--config") + 1] for c in CLUSTER}) == sorted(EXPECTED)


@pytest.mark.parametrize("command", CLUSTER, ids=lambda c: f"{os.path.basename(c[1])}-{c[c.index('--config') + 1]}")
def test_a_readme_cluster_command_runs_as_printed_with_dry_run(login_node, command):
    # no sbatch on PATH: a dry run needs no Slurm; the repository's textgan, not an installed one
    env = dict(os.environ, PATH=os.path.dirname(sys.executable), PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=120,
                          cwd=login_node, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (login_node / "runs").exists()  # a dry run creates nothing
    world, batch = EXPECTED[command[command.index("--config") + 1]]
    if "submit.py" in command[1]:
        assert f"# world size {world} = " in proc.stdout
        assert f"# global batch {batch} = batch_gpu " in proc.stdout and f" x {world} rank(s) x " in proc.stdout
        assert f"\n  batch_size: {batch}\n" in proc.stdout  # the resolved config the job gets holds it
    else:
        assert f"point(s) of {world} rank(s) each" in proc.stdout
        assert f"  (global batch {batch})" in proc.stdout


@pytest.mark.slow
@pytest.mark.multiproc
def test_the_run_dir_records_the_global_batch_the_ranks_trained_with(tmp_path, shards):  # noqa: F811
    # per_rank on 2 ranks x batch_gpu 4: batch_size 4 becomes a global batch of 8 (ema_kimg 0.01 -> 0.02)
    proc = submit("--tasks-per-node", "2", "--set", "schedule.batch_size=4", "--set", "schedule.batch_scaling=per_rank",
                  "--set", "data.num_workers=0", outdir=tmp_path / "runs", shards=shards, total_kimg=0.016)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "00000-demo"
    recorded = load_config(str(run_dir / "config.yaml"))
    assert (recorded.schedule.batch_size, recorded.schedule.ref_batch_size) == (8, 8)
    assert recorded.schedule.ema_kimg == pytest.approx(0.02)
    kimg = [json.loads(line)["Progress/kimg"]["mean"] for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert kimg == [0.016]  # two iterations of 8 images
