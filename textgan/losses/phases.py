"""The phases of one training iteration, declared once, and what one micro-batch of a phase hands the objective.

    for phase in objective.phases(G_reg_interval, D_reg_interval):     # Gmain, Greg, Dmain, Dreg
        if phase.due(batch_idx):
            out = objective.phase_loss(phase, PhaseInputs(...))            # {"total": .., "Loss/..": ..}

A Phase says which network it trains (its engine backpropagates and steps) and whether it is the
main loss or a lazy regularizer; the training step reads both from here instead of from the name, and
the objective routes on them. Pure data: nothing here knows of ranks or engines (`mean_fn` is a plain
callable that the caller may make collective).
"""

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

NETWORKS = ("G", "D")
KINDS = ("main", "reg")


@dataclass(frozen=True)
class Phase:
    name: str  # what stats, logs and non-finite reasons call it: Gmain, Greg, Dmain, Dreg
    network: str  # "G" or "D": the network whose optimizer this phase steps
    kind: str  # "main" (the adversarial loss, every iteration) or "reg" (lazy regularization)
    interval: int = 1  # runs in the iterations where batch_idx % interval == 0

    def __post_init__(self):
        if self.network not in NETWORKS or self.kind not in KINDS or self.interval < 1:
            raise ValueError(f"not a phase: {self}")

    @property
    def key(self) -> tuple:
        """(network, kind): what the objective and the step route on."""
        return self.network, self.kind

    def due(self, batch_idx: int) -> bool:
        return batch_idx % self.interval == 0


def iteration_phases(G_reg_interval: int, D_reg_interval: int, uses_pl: bool, uses_D_penalty: bool) -> list:
    """The phases of an iteration in their order: Gmain, Greg, Dmain, Dreg. A regularization phase is
    left out when its weights are zero (uses_pl: the path length; uses_D_penalty: R1 or R2) or its
    interval is 0 (the config's way to disable it)."""
    phases = [Phase("Gmain", "G", "main")]
    if uses_pl and G_reg_interval >= 1:
        phases.append(Phase("Greg", "G", "reg", int(G_reg_interval)))
    phases.append(Phase("Dmain", "D", "main"))
    if uses_D_penalty and D_reg_interval >= 1:
        phases.append(Phase("Dreg", "D", "reg", int(D_reg_interval)))
    return phases


@dataclass
class PhaseInputs:
    """One micro-batch's inputs to objective.phase_loss; each phase reads the fields it needs.

    G_fn(z, c) -> img or (img, ws), D_fn(img, c) -> logits: the networks as this phase calls them (the
    caller decides: through an engine or as the raw module). c is D's condition (and G's unless c_G is
    set: text noise, or the paired layout of heterologous pairs). G_module / D_module: the raw networks,
    for weight penalties and D's contrastive heads. pl_mean: the path length's running mean before this
    micro-batch; mean_fn averages the length mean across ranks (None: this process only)."""

    G_fn: Optional[Callable]
    D_fn: Optional[Callable]
    z: torch.Tensor
    c: torch.Tensor
    reals: Optional[torch.Tensor] = None
    c_G: Optional[torch.Tensor] = None
    ids: Optional[torch.Tensor] = None
    pairs: Any = None  # textgan.losses.objective.ContrastiveBatch when contrastive terms are on
    heads: Optional[torch.nn.Module] = None
    G_module: Optional[torch.nn.Module] = None
    D_module: Optional[torch.nn.Module] = None
    pl_mean: Any = 0.0
    mean_fn: Optional[Callable] = None
