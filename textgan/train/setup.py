"""The one way to build what training runs on: the text condition, the networks, the augmentation, the
contrastive terms, the objective and the DeepSpeed engines, in the order the training loop has always
built them (the random numbers drawn, and so the networks, stay the same).

    setup = build_training(cfg, runtime)               # the training loop, a benchmark
    stats = train_step(setup, batch_iter, state)       # textgan.train.step

Used by the training loop, the benchmarks and the tests alike, so that what they measure or check is
what a run trains. The data loader is not part of it: each caller feeds batches its own way.
"""

from dataclasses import dataclass
from typing import Callable, Optional

from textgan.augment import build_augment
from textgan.data.manifest import load_manifest
from textgan.losses.contrastive_terms import term_weights
from textgan.losses.objective import GANObjective
from textgan.nets import build_networks_from_config
from textgan.train.checkpoint import load_weights
from textgan.train.condition_stats import fit_condition_norms
from textgan.train.contrastive_setup import build_contrastive
from textgan.train.engines import build_engines
from textgan.train.text import TextConditioner


@dataclass
class TrainingSetup:
    """What build_training returns. engines.G.module / engines.D.module are the networks (under ZeRO-3
    partitioned in place: read them through the engines). c_encoder(batch) -> c is what train_step
    conditions on: the text conditioner, or the batch's own "c" when there is no text tower (a copy made
    with dataclasses.replace may condition through a wrapper, as the data-stall benchmark's timer)."""

    cfg: object
    runtime: object  # textgan.runtime.Runtime
    manifest: Optional[dict]  # the shards' manifest; None without a text tower
    text: Optional[TextConditioner]
    c_encoder: Callable
    augment: object  # an augmentation module or None (textgan.augment.build_augment)
    contrastive: object  # textgan.losses.contrastive_terms.ContrastiveTerms or None
    real_source: object  # textgan.train.contrastive_setup.RealFeatureSource or None
    objective: GANObjective
    engines: object  # textgan.train.engines.Engines


def batch_condition(batch: dict):
    """c for batches that carry their condition (tests' synthetic batches, pre-encoded benchmark batches)."""
    return batch["c"]


def build_networks(cfg, c_dim: int, weights: Optional[dict] = None):
    """(G, D) as training builds them, with weights["G"] / ["D"] loaded when given (--init-from)."""
    G, D = build_networks_from_config(cfg, c_dim)
    if weights is not None:
        G.load_state_dict(weights["G"])
        D.load_state_dict(weights["D"])
    return G, D


def build_training(cfg, runtime, *, text: Optional[TextConditioner] = None, manifest: Optional[dict] = None,
                   c_dim: Optional[int] = None, networks=None,
                   init_from: Optional[str] = None, ds_overrides: Optional[dict] = None,
                   objective_cls=GANObjective) -> TrainingSetup:
    """Seed (cfg.seed), then build everything on this rank; the process group must exist
    (runtime.init_distributed()). The text condition comes from one of:
      - default: a TextConditioner for cfg.text_encoder, with the manifest of cfg.data.shards;
      - text= (and manifest=): one built already, e.g. shared by several setups in one process;
      - c_dim=: no text tower; batches carry c (c_dim wide) as batch["c"]. No contrastive terms then.
    networks: (G, D) to train instead of the config's (tests' tiny nets). init_from: a checkpoint
    (directory, root or weights.pt) whose G, D and G_ema weights the run starts from.
    ds_overrides: merged into both engines' DeepSpeed configs. objective_cls: GANObjective or a subclass."""
    if networks is not None and init_from:
        raise ValueError("build_training: init_from loads into the config's networks, not into given ones")
    runtime.seed_everything(cfg.seed)
    if c_dim is None:
        manifest = load_manifest(cfg.data.shards) if manifest is None else manifest
        text = TextConditioner(cfg.text_encoder, manifest, runtime.device) if text is None else text
        c_dim = text.dim
    elif text is not None:
        raise ValueError("build_training: give text= or c_dim=, not both")
    weights = load_weights(init_from) if init_from else None
    G, D = networks if networks is not None else build_networks(cfg, c_dim, weights)
    fit_condition_norms(cfg, runtime, (G, D), text)  # model.c_norm: before G_ema is copied from G
    augment = build_augment(cfg.augment)
    augment = augment.to(runtime.device) if augment is not None else None
    if text is not None:
        contrastive, real_source = build_contrastive(cfg, text, manifest, runtime)
    elif any(term_weights(cfg.contrastive).values()):
        raise ValueError("the contrastive terms are on: they need the text tower (build_training without c_dim=)")
    else:
        contrastive, real_source = None, None
    objective = objective_cls(cfg.loss, augment, contrastive)
    engines = build_engines(G, D, cfg, runtime, ds_overrides=ds_overrides)
    if weights is not None:
        engines.G_ema.load_state_dict(weights["G_ema"])
    c_encoder = text if text is not None else batch_condition
    return TrainingSetup(cfg=cfg, runtime=runtime, manifest=manifest, text=text, c_encoder=c_encoder, augment=augment,
                         contrastive=contrastive, real_source=real_source, objective=objective, engines=engines)
