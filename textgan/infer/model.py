"""A trained generator ready for inference: G_ema, its config, the text tower that made c in training,
and the sha256 of the file the weights came from.

    model = load_model("runs/00000-demo")          # run dir: its newest complete checkpoint
    model = load_model("runs/00000-demo/best/shapes_alignment", device="cpu")
    model = load_model("demo-G.pt")                # a file written by `textgan export`
    c = model.embed(["a red circle above a blue square"])

No DeepSpeed and no process group: checkpoints are read with textgan.export's loaders.
"""

import os
from dataclasses import dataclass, field
from typing import Optional

import torch

from textgan.errors import UsageError
from textgan.export import generator_from_export, load_generator_from_checkpoint, read_export
from textgan.files import sha256_file
from textgan.train.checkpoint_dir import WEIGHTS_FILE
from textgan.train.text import embed_texts, load_text_tower

DEVICES = "auto, cpu, cuda or cuda:N"
# Latents averaged per prompt for the conditional truncation centre (Generator.conditional_w_avg's
# default, with its seed 0: the centre of a prompt is the same in every call).
CENTRE_SAMPLES = 2048


def resolve_device(name) -> torch.device:
    """auto (cuda when available, else cpu), cpu, cuda, cuda:N; UsageError when CUDA is asked for but absent."""
    name = "auto" if name is None else str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"--device {name!r} is not a device; use {DEVICES}") from e
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UsageError(f"--device {name!r}: use {DEVICES}")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}, "
                         f"CUDA build {torch.version.cuda}); use --device cpu or auto")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


@dataclass
class Model:
    """What generation needs of a trained run. `sha256` identifies `weights_file` (a checkpoint's
    weights.pt or the exported file), so a result can name exactly the weights that made it."""

    G: torch.nn.Module = field(repr=False)  # G_ema, eval mode, frozen
    cfg: object = field(repr=False)  # the run's resolved config (TrainConfig)
    tower: torch.nn.Module = field(repr=False)  # the ClipTower of cfg.text_encoder, built as training built it
    path: str  # what was loaded, as given
    weights_file: str
    sha256: str
    kind: str  # "checkpoint" or "export"
    run_dir: Optional[str] = None  # the run directory of a checkpoint; an export's folder
    kimg: Optional[float] = None
    tick: Optional[int] = None
    # per-prompt caches: a prompt's embedding and centre are computed once, each prompt on its own
    embeddings: dict = field(default_factory=dict, repr=False)
    centres: dict = field(default_factory=dict, repr=False)

    @property
    def arch(self) -> str:
        return str(self.cfg.model.arch)

    @property
    def has_styles(self) -> bool:
        """Only StyleGAN2 has ws, hence truncation."""
        return hasattr(self.G, "mapping")

    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    @property
    def resolution(self) -> int:
        return int(self.G.img_resolution)

    def to(self, device) -> "Model":
        device = resolve_device(device)
        if device != self.device:
            self.G.to(device)
            self.tower.to(device)
            self.embeddings.clear()  # recomputed on the new device (its kernels give other last bits)
            self.centres.clear()
        return self

    @torch.no_grad()
    def embed(self, prompts) -> torch.Tensor:
        """[N, c_dim] text embeddings c, as training made them (normalized). Each prompt is encoded in its own
        forward pass: on the CPU an embedding's last bits depend on which captions share a pass, and the
        image of a prompt must not depend on the other prompts of a call."""
        for prompt in prompts:
            if prompt not in self.embeddings:
                self.embeddings[prompt] = embed_texts(self.tower, [prompt])[0].to(self.device)
        return torch.stack([self.embeddings[p] for p in prompts])

    @torch.no_grad()
    def centre(self, prompt: str) -> torch.Tensor:
        """[w_dim] the average w of `prompt` (its conditional truncation centre); StyleGAN2 only."""
        if not self.has_styles:
            raise UsageError(f"model.arch={self.arch} has no styles, hence no truncation centre")
        if prompt not in self.centres:
            self.centres[prompt] = self.G.conditional_w_avg(self.embed([prompt])[0], num_samples=CENTRE_SAMPLES)
        return self.centres[prompt]


def load_model(path, device="auto") -> Model:
    """The Model of a run directory (its newest complete checkpoint), its checkpoints/ directory, one
    checkpoint directory (e.g. RUN/best/fid10k), or a file written by `textgan export`. UsageError naming
    the fix when the path is none of these."""
    path = os.fspath(path)
    device = resolve_device(device)
    if os.path.isfile(path):
        data = read_export(path)
        G, cfg = generator_from_export(data, path, device)
        weights_file, kind, run_dir = path, "export", os.path.dirname(os.path.abspath(path))
        kimg, tick = data.get("kimg"), data.get("tick")
    else:
        try:
            G, cfg, info = load_generator_from_checkpoint(path, device=device)
        except UsageError as e:
            if not os.path.exists(path):
                raise UsageError(f"no model at {path}: give a run directory (runs/00000-demo), a checkpoint "
                                 "directory, or a file written by `textgan export`") from e
            raise
        weights_file, kind, run_dir = os.path.join(info["checkpoint"], WEIGHTS_FILE), "checkpoint", info["run_dir"]
        kimg, tick = info["kimg"], info["tick"]
    tower = load_text_tower(cfg.text_encoder, device)
    if tower.dim != G.c_dim:
        raise UsageError(f"{path}: its text encoder {cfg.text_encoder.model!r} embeds in {tower.dim} dimensions but "
                         f"the generator was trained on {G.c_dim}; is the config the run's own?")
    return Model(G=G, cfg=cfg, tower=tower, path=path, weights_file=os.path.abspath(weights_file),
                 sha256=sha256_file(weights_file), kind=kind, run_dir=run_dir, kimg=kimg, tick=tick)
