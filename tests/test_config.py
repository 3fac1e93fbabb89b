"""The config recipes load, overrides apply, and every invalid config fails early with a message
that names the key (UsageError: the CLI's exit code 2)."""

import glob
import os

import open_clip
import pytest

import textgan.encoders  # noqa: F401  (registers textgan's built-in open_clip configs, e.g. textgan-demo-clip)
from textgan.config import check_world, load_config, to_yaml
from textgan.errors import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")) +
                 glob.glob(os.path.join(REPO, "configs", "research", "*.yaml")))
REQUIRED = ["data.shards=shards/x", "data.resolution=32"]


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def usage_error(path=None, overrides=()):
    with pytest.raises(UsageError) as info:
        load_config(path, list(overrides))
    return str(info.value)


def test_the_product_recipes_exist():
    names = {os.path.basename(p) for p in RECIPES}
    assert {"demo.yaml", "coco64.yaml", "coco128.yaml", "coco256.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_every_recipe_is_valid_and_runs_on_one_and_two_ranks(path):
    cfg = load_config(path)
    # the text encoder must be one open_clip knows (checked offline: no weights are loaded)
    assert cfg.text_encoder.model in open_clip.list_models()
    # random weights only where asked for, and then without a pretrained tag
    assert cfg.text_encoder.random_weights == (cfg.text_encoder.pretrained is None)
    assert check_world(cfg, 1) * cfg.schedule.batch_gpu == cfg.schedule.batch_size
    assert check_world(cfg, 2) * cfg.schedule.batch_gpu * 2 == cfg.schedule.batch_size


def test_demo_recipe_needs_no_download_and_builds_its_data():
    cfg = load_config(os.path.join(REPO, "configs", "demo.yaml"))
    assert cfg.text_encoder.random_weights is True and cfg.text_encoder.pretrained is None
    assert cfg.data.build_shapes_if_missing > 0 and cfg.data.resolution == 32
    assert cfg.dist.precision == "fp32" and cfg.augment.kind == "none"
    # the pair that learns the text within the CPU budget (BENCHMARKS.md, "demo learning")
    assert cfg.model.arch == "cgan" and cfg.loss.matching_aware > 0


@pytest.mark.parametrize("res,size", [(64, 0.5), (128, 0.8), (256, 1.0)])
def test_coco_recipes_follow_the_research_settings(res, size):
    cfg = load_config(os.path.join(REPO, "configs", f"coco{res}.yaml"))
    assert cfg.data.resolution == res and cfg.model.size == size
    assert cfg.augment.kind == "ada" and not cfg.text_encoder.random_weights
    batch = cfg.schedule.batch_size
    assert cfg.loss.r1_gamma == pytest.approx(0.0002 * res**2 / batch)  # StyleGAN2-ADA heuristic
    assert cfg.schedule.ema_kimg == pytest.approx(batch * 10 / 32)


def test_dotted_overrides_change_values_and_win_over_the_file(tmp_path):
    path = write(tmp_path, "data:\n  shards: a\n  resolution: 64\nschedule:\n  total_kimg: 100\n")
    cfg = load_config(path, ["schedule.total_kimg=7", "loss.kind=hinge", "optim.betas=[0.5,0.9]"])
    assert cfg.schedule.total_kimg == 7.0
    assert cfg.loss.kind == "hinge"
    assert list(cfg.optim.betas) == [0.5, 0.9]
    assert cfg.data.resolution == 64  # untouched values come from the file
    assert cfg.model.z_dim == 512  # and from the defaults


def test_resolved_yaml_loads_back_to_the_same_config(tmp_path):
    cfg = load_config(os.path.join(REPO, "configs", "demo.yaml"), ["seed=5"])
    again = load_config(write(tmp_path, to_yaml(cfg)))
    assert to_yaml(again) == to_yaml(cfg)


@pytest.mark.parametrize("via_file", [True, False])
def test_unknown_key_suggests_the_closest_valid_one(tmp_path, via_file):
    if via_file:
        message = usage_error(write(tmp_path, "schedule:\n  totl_kimg: 3\n"), REQUIRED)
    else:
        message = usage_error(None, REQUIRED + ["schedule.totl_kimg=3"])
    assert "'schedule.totl_kimg'" in message
    assert "Did you mean 'schedule.total_kimg'?" in message


def test_misspelt_section_suggests_the_section():
    message = usage_error(None, REQUIRED + ["shedule.total_kimg=3"])
    assert "'shedule'" in message and "schedule" in message.split("Did you mean")[1].split("?")[0]
    assert "lr_schedule" not in message


@pytest.mark.parametrize("override, hint", [
    # a bare leaf name (or one in the wrong section) names every full key with that leaf, training keys first
    ("batch_size=64", "Did you mean 'schedule.batch_size' or 'metrics.batch_size'?"),
    ("optim.batch_size=64", "Did you mean 'schedule.batch_size' or 'metrics.batch_size'?"),
    ("kind=ada", "Did you mean 'loss.kind' or 'augment.kind'?"),
    ("total_kimg=5", "Did you mean 'schedule.total_kimg'?"),
    # a misspelt leaf name stands for every key with the leaf it is closest to
    ("batchsize=64", "Did you mean 'schedule.batch_size' or 'metrics.batch_size'?"),
    ("seed2=1", "Did you mean 'seed'?"),
])
def test_a_leaf_name_suggests_every_full_key_with_that_leaf(override, hint):
    message = usage_error(None, REQUIRED + [override])
    assert f"unknown config key '{override.split('=')[0]}'. {hint}" in message


def test_nothing_close_suggests_nothing():
    message = usage_error(None, REQUIRED + ["zzzzqqq=1"])
    assert "unknown config key 'zzzzqqq'" in message and "Did you mean" not in message


@pytest.mark.parametrize("override,key", [
    ("schedule.batch_size=abc", "schedule.batch_size"),
    ("loss.r1_gamma=lots", "loss.r1_gamma"),
    ("text_encoder.random_weights=maybe", "text_encoder.random_weights"),
])
def test_wrong_type_names_the_key(override, key):
    message = usage_error(None, REQUIRED + [override])
    assert f"'{key}'" in message and "wrong type" in message


def test_wrong_type_in_a_file_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "loss:\n  r1_gamma: lots\n")
    message = usage_error(path, REQUIRED)
    assert "'loss.r1_gamma'" in message and path in message


def test_missing_required_keys_are_all_named():
    message = usage_error(None, [])
    assert "data.shards" in message and "data.resolution" in message and "must be set" in message


@pytest.mark.parametrize("resolution", [48, 8, 2048])
def test_resolution_must_be_a_power_of_two_in_range(resolution):
    message = usage_error(None, ["data.shards=x", f"data.resolution={resolution}"])
    assert "'data.resolution'" in message and str(resolution) in message and "power of two" in message


def test_batch_size_must_be_a_multiple_of_batch_gpu():
    message = usage_error(None, REQUIRED + ["schedule.batch_size=30", "schedule.batch_gpu=4"])
    assert "'schedule.batch_size'" in message and "30" in message


def test_batch_size_must_divide_over_the_ranks():
    cfg = load_config(None, REQUIRED + ["schedule.batch_size=24", "schedule.batch_gpu=8"])
    assert check_world(cfg, 1) == 3
    with pytest.raises(UsageError) as info:
        check_world(cfg, 2)  # 24 is not a multiple of 8 x 2
    assert "'schedule.batch_size'" in str(info.value) and "8 x 2 = 16" in str(info.value)


@pytest.mark.parametrize("override,key", [
    ("model.arch=biggan", "model.arch"),
    ("loss.kind=wasserstein", "loss.kind"),
    ("dist.zero_stage_G=4", "dist.zero_stage_G"),
    ("dist.precision=fp8", "dist.precision"),
])
def test_bad_choice_lists_the_allowed_values(override, key):
    message = usage_error(None, REQUIRED + [override])
    assert f"'{key}'" in message and "allowed" in message


def test_override_without_equals_sign_is_refused():
    message = usage_error(None, REQUIRED + ["schedule.total_kimg"])
    assert "schedule.total_kimg" in message and "key=value" in message


def test_missing_config_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    message = usage_error(path, REQUIRED)
    assert path in message and "does not exist" in message


def test_invalid_yaml_reports_the_line(tmp_path):
    path = write(tmp_path, "model:\n  size: 0.5\n   arch: [\n")
    message = usage_error(path, REQUIRED)
    assert path in message and "not valid YAML" in message and "line 3" in message


@pytest.mark.parametrize("overrides,named", [
    ([], ["'loss.pl_weight'", "'loss.style_mixing_prob'"]),  # the defaults are for StyleGAN2
    (["loss.pl_weight=0"], ["'loss.style_mixing_prob'"]),
    (["loss.style_mixing_prob=0"], ["'loss.pl_weight'"]),
])
def test_cgan_refuses_the_style_terms_and_names_them(overrides, named):
    message = usage_error(None, REQUIRED + ["model.arch=cgan"] + overrides)
    assert all(key in message for key in named) and "cgan" in message
    unnamed = {"'loss.pl_weight'", "'loss.style_mixing_prob'"} - set(named)
    assert not any(key in message for key in unnamed)


def test_cgan_without_the_style_terms_is_valid():
    cfg = load_config(None, REQUIRED + ["model.arch=cgan", "loss.pl_weight=0", "loss.style_mixing_prob=0"])
    assert cfg.model.arch == "cgan"


def test_a_recipe_starts_from_its_base_and_changes_only_what_it_sets(tmp_path):
    write(tmp_path, "data:\n  shards: s\n  resolution: 64\nseed: 3\nschedule:\n  total_kimg: 10\n", "root.yaml")
    write(tmp_path, "base: root.yaml\nseed: 4\n", "mid.yaml")
    os.makedirs(tmp_path / "sub")
    leaf = write(tmp_path, "base: ../mid.yaml\nschedule:\n  total_kimg: 20\n", "sub/leaf.yaml")
    cfg = load_config(leaf, ["data.resolution=32"])
    assert (cfg.seed, cfg.schedule.total_kimg, cfg.data.shards, cfg.data.resolution) == (4, 20, "s", 32)


def test_the_research_variants_differ_only_in_their_study(tmp_path):
    research = os.path.join(REPO, "configs", "research")
    sym, asym = (load_config(os.path.join(research, f"{n}.yaml")) for n in ("symmetric", "asymmetric"))
    assert sym.contrastive.symmetric and not asym.contrastive.symmetric
    asym.contrastive.symmetric, asym.desc = True, sym.desc
    assert to_yaml(asym) == to_yaml(sym)
    pre, fly = (load_config(os.path.join(research, f"{n}.yaml")) for n in ("modified1_precomputed", "modified1"))
    assert (pre.contrastive.precomputed, fly.contrastive.precomputed) == ("require", "never")
    assert load_config(os.path.join(research, "base.yaml")).contrastive.C_it == 0


def test_base_loops_and_missing_bases_are_named(tmp_path):
    a = write(tmp_path, "base: b.yaml\n", "a.yaml")
    write(tmp_path, "base: a.yaml\n", "b.yaml")
    assert "loop" in usage_error(a) and "a.yaml -> " in usage_error(a)
    c = write(tmp_path, "base: nowhere.yaml\n", "c.yaml")
    message = usage_error(c)
    assert "nowhere.yaml does not exist" in message and "named as `base` in" in message


def test_requeue_bound_is_a_config_key():
    assert load_config(None, REQUIRED).schedule.max_requeues == 10
    assert "schedule.max_requeues" in usage_error(None, REQUIRED + ["schedule.max_requeues=-1"])
