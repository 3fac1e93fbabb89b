"""Checks and preparation done once, before a job is submitted: nothing that can be known in
advance may fail an hour later on a compute node.

- the shards exist (the demo builds its captioned-shapes shards when they are missing) and
  their manifest matches the config (resolution);
- the held-out shards of data.val_shards, when set, exist, match the config and are not the training shards;
- the text encoder can be resolved: a known open_clip model, a weights file that exists, or
  random weights asked for explicitly;
- the weights of --init-from exist (a complete checkpoint or a weights file).
Every check here only reads; ensure_shards(build=True) is the one step that writes (the demo's shards).
"""

import difflib
import os
import sys

from textgan.data import format as fmt
from textgan.data.manifest import load_manifest
from textgan.errors import UsageError


def ensure_shards(cfg, log=print, build: bool = True) -> dict:
    """The manifest of cfg.data.shards, building demo shapes shards first when allowed.

    build=False (the checks before submission, --dry-run): build nothing; when the demo's shards are
    still to be built, check the manifest they will have (the config's resolution, the configured
    sample count, no precomputed features) instead."""
    shards = cfg.data.shards
    missing = not os.path.isfile(os.path.join(shards, fmt.MANIFEST_NAME))
    if missing and cfg.data.build_shapes_if_missing > 0 and not build:
        planned = {"settings": {"resolution": cfg.data.resolution, "features": {}},
                   "samples": cfg.data.build_shapes_if_missing, "planned": True}
        return _check_manifest(cfg, planned)
    if missing and cfg.data.build_shapes_if_missing > 0:
        from textgan.data.building.builder import BuildConfig
        from textgan.data.building.builder import build as build_shards

        log(f"{shards} has no shards yet: building {cfg.data.build_shapes_if_missing} captioned-shapes samples "
            f"at {cfg.data.resolution} px (data.build_shapes_if_missing)")
        build_shards(BuildConfig(source="shapes", out=shards, resolution=cfg.data.resolution,
                          n=cfg.data.build_shapes_if_missing, seed=0, progress=sys.stderr.isatty()))
    return _check_manifest(cfg, load_manifest(shards))


def _check_manifest(cfg, manifest: dict) -> dict:
    shards = cfg.data.shards
    built = manifest["settings"]["resolution"]
    if built != cfg.data.resolution:
        raise UsageError(
            f"config key 'data.resolution' is {cfg.data.resolution} but the shards in {shards} were built at "
            f"{built} px; set data.resolution={built} or build shards at {cfg.data.resolution} px"
        )
    if manifest["samples"] < cfg.schedule.batch_gpu:
        raise UsageError(f"{shards} holds {manifest['samples']} samples, fewer than one batch_gpu "
                         f"({cfg.schedule.batch_gpu})")
    return manifest


def check_val_shards(cfg, train_manifest: dict) -> None:
    """data.val_shards, when set: a finished shard directory at data.resolution, other than data.shards, and
    both hold data.val_images samples (the fixed held-out set and the fixed training set it is compared with).
    `train_manifest`: the training shards' manifest (the planned one when the demo's are still to be built)."""
    val = cfg.data.val_shards
    if val is None:
        return
    key = f"config key 'data.val_shards' is {val}"
    build_hint = (f"build held-out shards there (`textgan shards shapes --outdir {val} --seed 1 ...`, or "
                  f"`textgan shards coco --split val --outdir {val} ...`), or leave data.val_shards unset")
    if os.path.realpath(val) == os.path.realpath(cfg.data.shards):
        raise UsageError(f"{key}, the training shards themselves: D's loss on them measures no memorization; "
                         f"{build_hint}")
    if not os.path.isfile(os.path.join(val, fmt.MANIFEST_NAME)):
        raise UsageError(f"{key}, which has no {fmt.MANIFEST_NAME} (not a finished shard directory); {build_hint}")
    try:
        manifest = load_manifest(val)
    except UsageError as e:
        raise UsageError(f"{key}: {e}") from e
    built = manifest["settings"]["resolution"]
    if built != cfg.data.resolution:
        raise UsageError(f"{key}, built at {built} px, but data.resolution is {cfg.data.resolution}: D sees only "
                         f"{cfg.data.resolution} px images; build the held-out shards at {cfg.data.resolution} px "
                         "(--resolution) or point data.val_shards at shards of that resolution")
    for where, path, held in (("data.val_shards", val, manifest), ("data.shards", cfg.data.shards, train_manifest)):
        if held["samples"] < cfg.data.val_images:
            raise UsageError(f"config key 'data.val_images' is {cfg.data.val_images}, but {where} ({path}) holds "
                             f"{held['samples']} samples; set data.val_images={held['samples']} or less")


def check_text_encoder(cfg) -> None:
    """Fail fast on a text encoder that cannot load, without loading it (that is the job's work)."""
    import open_clip

    import textgan.encoders  # noqa: F401  (registers the architectures textgan ships)

    te = cfg.text_encoder
    known = open_clip.list_models()
    if te.model not in known:
        close = difflib.get_close_matches(te.model, known, n=3)
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise UsageError(f"config key 'text_encoder.model' is {te.model!r}, not an open_clip model.{hint}")
    if te.pretrained is None:
        if not te.random_weights:
            raise UsageError(
                "config key 'text_encoder.pretrained' is not set: give a pretrained tag (e.g. openai) or a local "
                "weights file; only a demo may set text_encoder.random_weights=true instead"
            )
        return
    looks_like_path = os.sep in te.pretrained or te.pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))
    if looks_like_path and not os.path.isfile(te.pretrained):
        raise UsageError(f"config key 'text_encoder.pretrained': weights file {te.pretrained} does not exist")


def check_contrastive(cfg, manifest: dict) -> None:
    """Fail fast on contrastive settings that cannot work: the ResNet/VGG net's weights, and
    precomputed features that the shards do not have (contrastive.precomputed=require)."""
    from textgan.encoders import PERCEPTUAL_DIMS

    cc = cfg.contrastive
    perceptual_on = cc.S_perceptual * cc.C_ii > 0
    if perceptual_on:
        if cc.perceptual not in PERCEPTUAL_DIMS:
            raise UsageError(f"config key 'contrastive.perceptual' is {cc.perceptual!r}; choose one of "
                             f"{', '.join(PERCEPTUAL_DIMS)}")
        if cc.perceptual_weights is None and not cc.perceptual_random_weights:
            raise UsageError(
                "config key 'contrastive.perceptual_weights' is not set: give a local torchvision state-dict file "
                f"for {cc.perceptual} (e.g. the file torchvision caches under $TORCH_HOME/hub/checkpoints)"
            )
        if cc.perceptual_weights is not None and not os.path.isfile(cc.perceptual_weights):
            raise UsageError(f"config key 'contrastive.perceptual_weights': file {cc.perceptual_weights} does not exist")
    if cc.precomputed == "require" and (cc.C_ii > 0):
        features = (manifest.get("settings") or {}).get("features") or {}
        wanted = [k for k, on in (("clip", cc.S_clip > 0), ("perceptual", perceptual_on)) if on]
        missing = [k for k in wanted if features.get(k) is None]
        if missing:
            raise UsageError(
                f"contrastive.precomputed=require, but the shards in {cfg.data.shards} carry no precomputed "
                f"{' or '.join(missing)} features; build them with the shard builder's --clip-model/--perceptual "
                "options, or set contrastive.precomputed=auto"
            )


def check_init_from(path) -> None:
    """--init-from must name weights that load: a complete checkpoint, a run's checkpoints/ directory with
    one, or a weights file (what textgan.train.checkpoint.load_weights reads; nothing is loaded here)."""
    if path is None:
        return
    from textgan.train.checkpoint import COMPLETE, find_latest

    usage = ("give a checkpoint (runs/<run>/checkpoints/<tag>), a run's checkpoints/ directory, or an exported "
             "weights file")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, COMPLETE)) and find_latest(path) is None:
            raise UsageError(f"--init-from {path}: the directory holds no complete textgan checkpoint; {usage}")
    elif not os.path.isfile(path):
        raise UsageError(f"--init-from {path}: no such file or directory; {usage}")
