"""`textgan export`: G_ema and its config as one standalone file, loadable without DeepSpeed.

    textgan export runs/00003-demo --out demo-G.pt        # newest complete checkpoint of the run
    textgan export runs/00003-demo/checkpoints/000048.000 --out demo-G.pt

    from textgan.export import load_generator, load_generator_from_checkpoint
    G, cfg = load_generator("demo-G.pt")                  # nn.Module in eval mode, the run's config
    G, cfg, info = load_generator_from_checkpoint("runs/00003-demo/best/shapes_alignment")  # no export step
    img = G(z, c, noise_mode="const")                     # c: text embeddings from cfg.text_encoder

The file is a torch.save of plain types only (tensors, numbers, strings, dicts), so
torch.load(weights_only=True) reads it and loading never unpickles code:

    format "textgan-generator", version 1
    config        the run's resolved config.yaml, as YAML text
    arch, c_dim   what the network is rebuilt from (with the config's model section)
    G_ema         fp32 state dict
    text_encoder  the config's text_encoder section: which text tower makes c
    kimg, tick    training progress of the checkpoint; source: the checkpoint's path
    warnings      what the run must carry along (e.g. a text tower with random weights)

Exporting reads checkpoints through textgan.train.checkpoint (which imports DeepSpeed); loading
imports nothing beyond torch, omegaconf and textgan.nets. The command line is textgan/export_cli.py.
"""

import io
import os

import torch
from omegaconf import OmegaConf

from textgan.atomic import write_bytes_atomic
from textgan.config import TrainConfig, validate
from textgan.errors import UsageError
from textgan.nets import build_networks_from_config as build_nets

FORMAT = "textgan-generator"
VERSION = 1
CONFIG_FILE = "config.yaml"  # textgan.train.rundir.CONFIG_FILE (not imported: keep loading light)
CHECKPOINTS_DIR = "checkpoints"


# ---------------------------------------------------------------------- networks from a config


def c_dim_of(arch: str, G_state: dict, z_dim: int) -> int:
    """The text-embedding size a generator state dict was built for (the first layer that reads c)."""
    # model.c_embed_layers > 0: an MLP (ConditionMapping) reads c first; its first EqualLinear is [width, c_dim]
    embed_mlp = {"stylegan2": "mapping.embed.layers.0.weight", "cgan": "c_embed.layers.0.weight"}.get(arch)
    if embed_mlp in G_state:
        return int(G_state[embed_mlp].shape[1])
    if arch == "stylegan2":
        return int(G_state["mapping.embed.weight"].shape[1])  # EqualLinear(c_dim, w_dim): [w_dim, c_dim]
    if arch == "cgan":
        return int(G_state["net.0.weight"].shape[0]) - z_dim  # ConvTranspose2d(z_dim + c_dim, ...)
    raise ValueError(f"unknown model.arch {arch!r}")


def config_from_yaml(text: str, where: str):
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.create(text))
    except Exception as e:  # yaml or schema errors: the file is not what we wrote
        raise UsageError(f"{where}: its config does not load ({e})") from e
    validate(cfg)
    return cfg


def _generator(cfg, c_dim: int, G_state: dict, where: str) -> torch.nn.Module:
    G, _ = build_nets(cfg, c_dim)
    try:
        G.load_state_dict(G_state, strict=True)
    except RuntimeError as e:
        raise UsageError(f"{where}: the G_ema weights do not match the network its config describes: "
                         f"{str(e).splitlines()[0]} ...") from e
    return G.eval().requires_grad_(False)


# ---------------------------------------------------------------------- export


def find_checkpoint(path: str):
    """(checkpoint dir, run dir) for a run dir, its checkpoints/ root, or one checkpoint dir.
    UsageError when the path is missing or holds no complete checkpoint."""
    if not os.path.exists(path) and os.path.isdir(os.path.dirname(os.path.abspath(path))):
        # RUN/best/NAME between the two renames of its replacement (a crash there): finish it first.
        from textgan.train.checkpoint import recover_replacements

        recover_replacements(os.path.dirname(os.path.abspath(path)))
    if not os.path.exists(path):
        raise UsageError(f"{path} does not exist; give a run directory (runs/00000-demo), its checkpoints/ "
                         "directory or one checkpoint directory")
    if not os.path.isdir(path):
        raise UsageError(f"{path} is a file; give a run directory, its checkpoints/ directory or one "
                         "checkpoint directory")
    from textgan.train.checkpoint import COMPLETE, complete_checkpoints, find_latest

    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, COMPLETE)):
        ckpt_root = os.path.dirname(path)
        if path not in [p for _, p in complete_checkpoints(ckpt_root)]:  # a COMPLETE that is not our marker
            raise UsageError(f"{path} is not a complete textgan checkpoint (its {COMPLETE} marker is invalid)")
        return path, os.path.dirname(ckpt_root)
    is_run_dir = os.path.isdir(os.path.join(path, CHECKPOINTS_DIR)) or os.path.isfile(os.path.join(path, CONFIG_FILE))
    ckpt_root = os.path.join(path, CHECKPOINTS_DIR) if is_run_dir else path
    latest = find_latest(ckpt_root)
    if latest is None:
        raise UsageError(f"{path} holds no complete checkpoint (looked in {ckpt_root}); checkpoints are written "
                         "every schedule.network_snapshot_ticks ticks and at the end of a run")
    return latest, os.path.dirname(ckpt_root)


def _read_checkpoint(path: str) -> dict:
    """What a run / checkpoint path (see find_checkpoint) holds for G_ema: {"checkpoint", "run_dir",
    "config_text", "cfg", "c_dim", "G_state" (fp32), "client" (the loop's client state)}."""
    from textgan.train.checkpoint import CLIENT_FILE, load_weights

    ckpt, run_dir = find_checkpoint(path)
    config_path = os.path.join(run_dir, CONFIG_FILE)
    try:
        with open(config_path, encoding="utf-8") as f:
            config_text = f.read()
    except OSError as e:
        raise UsageError(f"{config_path} is missing: the run's resolved config is needed to rebuild G "
                         f"(checkpoint {ckpt} belongs to run directory {run_dir})") from e
    cfg = config_from_yaml(config_text, config_path)
    try:
        G_state = load_weights(ckpt)["G_ema"]
        client = torch.load(os.path.join(ckpt, CLIENT_FILE), map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise UsageError(f"checkpoint {ckpt} cannot be read: {e}") from e
    G_state = {k: (v.float() if v.is_floating_point() else v).contiguous().clone() for k, v in G_state.items()}
    try:
        c_dim = c_dim_of(cfg.model.arch, G_state, cfg.model.z_dim)
    except KeyError as e:
        raise UsageError(f"checkpoint {ckpt} holds no {cfg.model.arch} generator (missing {e}); does "
                         f"{config_path} belong to it?") from e
    return {"checkpoint": ckpt, "run_dir": run_dir, "config_text": config_text, "cfg": cfg, "c_dim": c_dim,
            "G_state": G_state, "client": client}


def load_generator_from_checkpoint(path: str, device="cpu"):
    """(G_ema in eval mode with frozen parameters, on `device`; the run's config; info) from a run
    directory (its newest complete checkpoint), its checkpoints/ directory, one checkpoint directory
    (e.g. RUN/best/fid10k). info: {"kimg", "tick", "checkpoint", "run_dir"}. Reads the checkpoint's
    weights.pt and the run's config.yaml; needs neither DeepSpeed nor a process group."""
    read = _read_checkpoint(path)
    G = _generator(read["cfg"], read["c_dim"], read["G_state"], read["checkpoint"])
    state = read["client"].get("state", {})
    info = {"kimg": state.get("cur_nimg", 0) / 1000, "tick": int(state.get("tick", 0)),
            "checkpoint": read["checkpoint"], "run_dir": read["run_dir"]}
    return G.to(device), read["cfg"], info


def export_generator(path: str, out: str) -> dict:
    """Write the standalone generator file `out` from a run / checkpoint (see find_checkpoint).
    Returns what was written, without the weights."""
    from textgan.train.rundir import run_warnings

    read = _read_checkpoint(path)
    ckpt, cfg, config_text, c_dim, G_state = (read[k] for k in ("checkpoint", "cfg", "config_text", "c_dim",
                                                                 "G_state"))
    _generator(cfg, c_dim, G_state, ckpt)  # refuse to write a file that would not load
    state = read["client"].get("state", {})
    record = {
        "format": FORMAT,
        "version": VERSION,
        "config": config_text,
        "arch": str(cfg.model.arch),
        "c_dim": c_dim,
        "text_encoder": OmegaConf.to_container(cfg.text_encoder),
        "kimg": state.get("cur_nimg", 0) / 1000,
        "tick": int(state.get("tick", 0)),
        "source": ckpt,
        "warnings": run_warnings(cfg),
    }
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"--out {out}: directory {out_dir} does not exist")
    buffer = io.BytesIO()
    torch.save({**record, "G_ema": G_state}, buffer)
    write_bytes_atomic(out, buffer.getvalue(), tmp=f"{out}.tmp{os.getpid()}")
    return record


# ---------------------------------------------------------------------- loading (no DeepSpeed)


def read_export(path: str) -> dict:
    """The raw content of an exported file (weights_only loading); UsageError when it is not one."""
    if not os.path.exists(path):
        raise UsageError(f"{path} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory; pass a file written by `textgan export RUN --out FILE`")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or one that holds arbitrary objects
        raise UsageError(f"{path} is not a textgan generator file (torch.load with weights_only failed: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        hint = ""
        if isinstance(data, dict) and {"G", "D", "G_ema"} <= set(data):
            hint = " It is a checkpoint's weights.pt: export the run first with `textgan export RUN --out FILE`."
        raise UsageError(f"{path} is not a textgan generator file (no format {FORMAT!r}).{hint}")
    if int(data.get("version", 0)) > VERSION:
        raise UsageError(f"{path} has format version {data['version']}; this textgan reads up to {VERSION}: "
                         "upgrade textgan")
    return data


def load_generator(path: str, device="cpu"):
    """(G_ema in eval mode with frozen parameters, on `device`; the run's config) from an exported file.
    Rebuilds the network from the stored config and loads the weights strictly."""
    return generator_from_export(read_export(path), path, device)


def generator_from_export(data: dict, where: str, device="cpu"):
    """load_generator for content already read with read_export (`where`: its path, for messages), so
    that a caller who also wants kimg/tick/text_encoder reads the file once."""
    cfg = config_from_yaml(data["config"], where)
    G = _generator(cfg, int(data["c_dim"]), data["G_ema"], where)
    return G.to(device), cfg
