"""The training configuration: typed sections, YAML recipes, dotted overrides, strict checks.

OmegaConf structured configs give us the typing and the merge of YAML + `key=value`
overrides; this module adds what users need on top: errors that name the key, suggest
the closest valid one, and fail before any work starts (textgan.errors.UsageError, exit 2).

Vocabulary follows StyleGAN: kimg, tick, snapshot, batch_size (global), batch_gpu (per rank).
"""

import dataclasses
import difflib
import math
import os
import re
import typing
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from textgan.errors import UsageError
from textgan.config_metrics import validate_metrics_config
from textgan.config_schema import (  # noqa: F401  (callers import the sections from textgan.config)
    AugmentConfig,
    ContrastiveConfig,
    DataConfig,
    DistConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TextEncoderConfig,
    TrainConfig,
)
from textgan.ranges import RESOLUTIONS, above, at_least, between, check_range, resolutions_text
from textgan.scaling import BATCH_SCALINGS, LR_SCALINGS, accumulation_steps


CHOICES = {
    "model.arch": ("stylegan2", "cgan"),
    "model.c_norm": ("none", "center", "whiten"),
    "loss.kind": ("nonsaturating", "hinge", "rpgan"),
    "loss.matching_negatives": ("roll", "nearest"),
    "augment.kind": ("none", "ada", "diffaugment"),
    "optim.lr_schedule": ("constant", "warmup", "cosine"),
    "optim.lr_scaling": LR_SCALINGS,
    "schedule.batch_scaling": BATCH_SCALINGS,
    "dist.precision": ("fp32", "bf16", "fp16"),
    "dist.zero_stage_G": (0, 1, 2, 3),
    "dist.zero_stage_D": (0, 1, 2, 3),
    "contrastive.positives": ("pair", "image"),
    "contrastive.precomputed": ("auto", "require", "never"),
}

# The allowed range of every numeric key (tests/test_config_ranges.py checks that none is missing); the
# metrics section's are METRICS_RANGES. NaN and +-inf are refused for every float, listed here or not.
SEED = between(0, 2**32 - 1)
PROBABILITY = between(0, 1)
RANGES = {
    "data.build_shapes_if_missing": at_least(0, "0: never build"),
    "data.num_workers": at_least(0, "0: load in the training process"),
    "data.max_skip_rate": between(0, 1, "a fraction of the samples read"),
    "data.val_images": at_least(1),
    "model.size": above(0),
    "model.mapping_lr_mul": above(0),
    "model.channel_base": at_least(1),
    "model.channel_max": at_least(1),
    "model.z_dim": at_least(1),
    "model.w_dim": at_least(1),
    "model.mapping_layers": at_least(1),
    "model.c_embed_layers": at_least(0, "0: no MLP on c in G"),
    "model.mbstd_group_size": at_least(1),
    "loss.r1_gamma": at_least(0),
    "loss.r2_gamma": at_least(0, "null: loss.r1_gamma with loss.kind=rpgan, else 0"),
    "loss.pl_weight": at_least(0, "0 disables it"),
    "loss.pl_decay": PROBABILITY,
    "loss.pl_batch_shrink": at_least(1, "the path-length phase runs G on batch_gpu // pl_batch_shrink samples; "
                                        "1: all of them"),
    "loss.style_mixing_prob": PROBABILITY,
    "loss.matching_aware": at_least(0, "0 disables it"),
    "loss.ortho_reg": at_least(0, "0 disables it"),
    "loss.weight_decay": at_least(0, "0 disables it"),
    "loss.grad_clip": above(0, "null: no clipping"),
    **{f"contrastive.{k}": at_least(0, "0 disables it")
       for k in ("C_it", "C_ii", "h", "S_D", "S_clip", "S_perceptual", "text_noise")},
    "contrastive.temperature": above(0),
    "contrastive.head_dim": at_least(1),
    # the ResNet/VGG trunks reduce by 32 before pooling (textgan.encoders.PERCEPTUAL_MIN_SIDE)
    "contrastive.perceptual_size": at_least(32),
    "augment.ada_target": PROBABILITY,
    "augment.ada_kimg": above(0),
    "augment.ada_interval": at_least(1),
    "optim.G_lr": at_least(0, "0 freezes G"),
    "optim.D_lr": at_least(0, "0 freezes D"),
    "optim.eps": above(0),
    "optim.warmup_kimg": at_least(0),
    "schedule.total_kimg": above(0),
    "schedule.kimg_per_tick": above(0),
    "schedule.batch_size": at_least(1),
    "schedule.batch_gpu": at_least(1),
    "schedule.ref_batch_size": at_least(1, "null: schedule.batch_size"),
    "schedule.G_reg_interval": at_least(0, "0 disables the phase"),
    "schedule.D_reg_interval": at_least(0, "0 disables the phase"),
    "schedule.ema_kimg": above(0),
    "schedule.ema_rampup": above(0, "null: no ramp-up"),
    "schedule.image_snapshot_ticks": at_least(1),
    "schedule.network_snapshot_ticks": at_least(1),
    "schedule.keep_checkpoints": at_least(1),
    "schedule.max_nonfinite_steps": at_least(1),
    "schedule.max_requeues": at_least(0),
    "dist.num_threads": at_least(1, "null: this node's cores / its ranks"),
    "seed": SEED,
}
# Characters a run description may hold: it names the run directory and the Slurm job (in the batch
# script), so nothing a shell or a path would read specially.
DESC_CHARS = re.compile(r"[A-Za-z0-9._+=-]*")


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; leaves only."""
    flat = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _leaves(cfg) -> dict:
    # to_container keeps unset (MISSING) values as the string "???" instead of raising
    return _flatten(OmegaConf.to_container(cfg, throw_on_missing=False))


# Sections in the order their keys are suggested when a bare leaf name fits several: the keys a recipe sets
# to train come before metrics.*, which only tunes how a run is measured ('batch_size' means the training batch).
SUGGESTION_ORDER = ("schedule", "model", "data", "loss", "optim", "augment", "contrastive", "text_encoder", "dist",
                    "metrics")


def suggest_keys(key: str, leaves: list) -> list:
    """The valid keys to suggest for the unknown `key`, most relevant first.

    1. A leaf name that exists, bare or in the wrong section ('batch_size', 'optim.batch_size'): every full
       key with that leaf, so that the one meant is among them ('schedule.batch_size', 'metrics.batch_size').
    2. Else the closest full key, section or leaf name (a misspelling: 'schedule.totl_kimg', 'shedule',
       'batchsize'); a leaf name stands for every full key with that leaf."""
    leaf = key.split(".")[-1]

    def relevance(full: str) -> int:
        section = full.split(".")[0]
        return SUGGESTION_ORDER.index(section) if section in SUGGESTION_ORDER else len(SUGGESTION_ORDER)

    def with_leaf(name: str) -> list:
        return sorted((k for k in leaves if k.split(".")[-1] == name and k != key), key=relevance)

    if with_leaf(leaf):
        return with_leaf(leaf)
    sections = sorted({k.split(".")[0] for k in leaves if "." in k})
    names = sorted({k.split(".")[-1] for k in leaves})
    close = difflib.get_close_matches(key, sorted(set(leaves + sections + names)), n=1)
    if not close:
        return []
    exact = close if close[0] in leaves or close[0] in sections else []
    return exact + [k for k in with_leaf(close[0]) if k not in exact]


def _explain(error: OmegaConfBaseException, source: str) -> UsageError:
    """Turn an OmegaConf error into one that names the key and suggests the nearest valid one."""
    key = getattr(error, "full_key", None) or ""
    if isinstance(error, ConfigKeyError):
        close = suggest_keys(key, list(_leaves(OmegaConf.structured(TrainConfig))))
        hint = f" Did you mean {' or '.join(repr(k) for k in close)}?" if close else ""
        return UsageError(f"{source}: unknown config key '{key}'.{hint} Valid keys: see `--dry-run` output.")
    if isinstance(error, ValidationError):
        return UsageError(f"{source}: config key '{key}' has the wrong type: {str(error.msg).splitlines()[0]}")
    return UsageError(f"{source}: invalid config: {error}")


def read_yaml(path: str, what: str, missing_hint: str):
    """The YAML file at `path` as OmegaConf reads it: every YAML file textgan reads (recipes, sweep grids)
    goes through here, so a value such as 1e-3 is the same float in both (plain PyYAML reads it as a
    string). UsageError naming `what` and the file when it is missing (plus `missing_hint`) or not YAML."""
    try:
        return OmegaConf.load(path)
    except FileNotFoundError as e:
        raise UsageError(f"{what} {path} does not exist{missing_hint}") from e
    except Exception as e:  # yaml errors carry line and column
        raise UsageError(f"{what} {path} is not valid YAML: {e}") from e


def _recipe_chain(path: str, seen: tuple = ()) -> list:
    """[(file, its YAML without `base`), ...] from the root recipe down to `path`. A recipe may
    start from another with `base: other.yaml` (relative to its own directory) and change only
    what differs, e.g. the research variants in configs/research/ on top of configs/coco256.yaml."""
    path = os.path.abspath(path)
    if path in seen:
        chain = " -> ".join(seen + (path,))
        raise UsageError(f"config files include each other in a loop: {chain}")
    where = f" (named as `base` in {seen[-1]})" if seen else ""
    loaded = read_yaml(path, "config file", f"{where}; recipes live in configs/")
    if not isinstance(loaded, DictConfig):  # a list, or a bare value: OmegaConf cannot merge it into sections
        raise UsageError(f"{path} must hold a mapping of config sections (data:, model:, schedule:, ...), "
                         f"not a {type(OmegaConf.to_container(loaded)).__name__}; see configs/demo.yaml")
    base = loaded.pop("base", None)
    if base is None:
        return [(path, loaded)]
    if not isinstance(base, str):
        raise UsageError(f"{path}: `base` must be the path of another recipe, got {base!r}")
    return _recipe_chain(os.path.join(os.path.dirname(path), base), seen + (path,)) + [(path, loaded)]


def load_config(path: Optional[str] = None, overrides: Optional[List[str]] = None) -> TrainConfig:
    """Defaults <- YAML file <- `key=value` overrides, then validate. Returns a typed TrainConfig
    object (an OmegaConf structured node that behaves like the dataclass)."""
    cfg = OmegaConf.structured(TrainConfig)
    if path is not None:
        for source, loaded in _recipe_chain(path):
            try:
                cfg = OmegaConf.merge(cfg, loaded)
            except OmegaConfBaseException as e:
                raise _explain(e, source) from e
    for item in overrides or []:
        if "=" not in item:
            raise UsageError(f"override {item!r} must look like key=value (e.g. schedule.total_kimg=100)")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise _explain(e, f"--set {item}") from e
    validate(cfg)
    return cfg


def validate(cfg) -> None:
    """Checks that need more than a type: allowed values, divisibility, powers of two."""
    missing = sorted(k for k, v in _leaves(cfg).items() if v == "???")
    if missing:
        raise UsageError(f"config keys {missing} must be set (in the YAML file or with --set key=value)")
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise UsageError(f"config key '{key}' is {value!r}; allowed: {', '.join(map(str, allowed))}")
    validate_ranges(cfg)
    if not DESC_CHARS.fullmatch(cfg.desc):
        raise UsageError(f"config key 'desc' is {cfg.desc!r}; allowed characters: letters, digits and . _ + = - "
                         "(it names the run directory and the Slurm job)")
    res = cfg.data.resolution
    if res not in RESOLUTIONS:
        raise UsageError(f"config key 'data.resolution' is {res}; it must be a power of two from 16 to 1024 "
                         f"({resolutions_text()}), the resolution the shards were built at")
    sched = cfg.schedule
    if sched.batch_size % sched.batch_gpu:
        raise UsageError(f"config key 'schedule.batch_size' ({sched.batch_size}) must be a multiple of "
                         f"'schedule.batch_gpu' ({sched.batch_gpu}) times the number of ranks")
    if cfg.model.arch == "cgan":
        # The DCGAN baseline maps (z, c) straight to an image: it has no styles (ws) to mix or to
        # measure a path length on, so these terms cannot apply; refuse rather than ignore them.
        styled = [f"loss.{k}" for k in ("pl_weight", "style_mixing_prob") if getattr(cfg.loss, k) != 0]
        if styled:
            raise UsageError(
                f"config key(s) {', '.join(repr(k) for k in styled)} must be 0 with model.arch=cgan "
                "(the cgan generator has no styles); set them to 0, e.g. --set loss.pl_weight=0 "
                "--set loss.style_mixing_prob=0"
            )
    validate_contrastive(cfg)
    validate_metrics_config(cfg.metrics)


def numeric_keys(cls=TrainConfig, prefix: str = "") -> dict:
    """{dotted key: int or float} for every numeric field of the config schema (Optional ones included)."""
    found, hints = {}, typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        optional = typing.get_origin(hint) is typing.Union  # Optional[X]: look at X
        inner = [a for a in typing.get_args(hint) if a is not type(None)] if optional else [hint]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            found.update(numeric_keys(inner[0], f"{prefix}{f.name}."))
        elif len(inner) == 1 and inner[0] in (int, float):
            found[f"{prefix}{f.name}"] = inner[0]
    return found


def validate_ranges(cfg) -> None:
    """Every numeric key inside its range (RANGES), every float finite, optim.betas two numbers in [0, 1)."""
    for key, allowed in RANGES.items():
        check_range(f"config key '{key}'", OmegaConf.select(cfg, key), allowed)
    for key, kind in numeric_keys().items():
        value = OmegaConf.select(cfg, key)
        if kind is float and value is not None and not math.isfinite(value):
            raise UsageError(f"config key '{key}' must be a finite number, got {value!r}")
    betas = list(cfg.optim.betas)
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and math.isfinite(b) and 0 <= b < 1 for b in betas):
        raise UsageError(f"config key 'optim.betas' must be two numbers from 0 to below 1 (Adam's beta1, beta2), "
                         f"got {betas}")


def validate_contrastive(cfg) -> None:
    cc = cfg.contrastive
    if cc.S_perceptual * cc.C_ii > 0 and not cc.perceptual:
        raise UsageError(
            "the ResNet/VGG image-image loss is on (contrastive.S_perceptual x contrastive.C_ii > 0) but no network "
            "is named: set contrastive.perceptual=resnet18|resnet50|vgg16 with contrastive.perceptual_weights=FILE, "
            "or contrastive.S_perceptual=0"
        )
    if cc.C_ii * cc.h > 0 and cfg.schedule.batch_gpu % 2:
        # Heterologous image-image pairs are two halves of G's micro-batch (one real image, two captions).
        raise UsageError(
            f"contrastive.C_ii x contrastive.h > 0 pairs the two halves of each micro-batch: "
            f"schedule.batch_gpu must be even (got {cfg.schedule.batch_gpu})"
        )


check_world = accumulation_steps  # of a config the launchers scaled to its world (textgan.scaling)


def to_yaml(cfg) -> str:
    """The config as YAML with interpolations (e.g. metrics.reference: ${data.shards}) resolved: what a
    run records and a job receives must not change meaning when another key is overridden later."""
    return OmegaConf.to_yaml(cfg, resolve=True)
