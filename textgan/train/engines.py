"""The two DeepSpeed engines (G and D) and the patterns that keep them correct on every ZeRO stage.

This is the only module that imports deepspeed. Each pattern below answers a failure measured with
DeepSpeed on CPU (gloo), and each is covered by tests/test_engines.py:

- One config dict per engine, generated from our config (one shared JSON breaks).
- A client `torch.optim.Adam` with float betas: a config "optimizer" block JIT-builds fused_adam
  (72 s) and silently means AdamW with weight decay 0.01.
- The G phase calls `D_engine.module` with D frozen (`frozen`): otherwise D's gradients are silently
  polluted on stages 0/1 and stages 2/3 assert "Gradient computed twice".
- R1 differentiates through a separate forward of `D_engine.module`. Under ZeRO-3 the R1 forward and
  its backward run inside `keep_gathered`, which keeps D's parameters gathered; the path
  length (Greg) is a double backward through G and needs the same (see the function for why).
- G_ema is a deep copy of G made *before* deepspeed.initialize (ZeRO-3 partitions G in place), updated
  under GatheredParameters on stage 3.
- Non-finite steps are skipped on every rank alike: `SkippableAdam` is told to skip by the caller
  after the ranks agree (one all-reduce), so DeepSpeed's micro-step bookkeeping never changes.
"""

import contextlib
import copy
import logging
from dataclasses import dataclass
from typing import Optional

import deepspeed
import torch
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum
from deepspeed.utils import safe_get_full_fp32_param
from deepspeed.utils.tensor_fragment import fragment_address
from torch import nn

from textgan.config import check_world
from textgan.errors import UsageError
from textgan.losses.objective import resolve_r2_gamma
from textgan.warn_once import show_once

# DeepSpeed warns about SkippableAdam (not on its ZeRO allow-list; see ds_config) at every
# deepspeed.initialize, i.e. once per engine: the log shows it once per run.
UNTESTED_OPTIMIZER_WARNING = "You are using ZeRO with an untested optimizer"

# Without this, DeepSpeed's CPU accelerator JIT-compiles a shared-memory all-reduce (83 s the first time,
# cached in TORCH_EXTENSIONS_DIR) when deepspeed.comm starts; gloo training does not need it. Set on
# import, before build_engines starts deepspeed.comm.
deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# ZeRO-3's default buckets are 5e8 elements (1.9 GB of fp32 per engine): far too much for a CPU run.
CPU_BUCKET_ELEMENTS = int(1e7)
# The only non-tensor classes DeepSpeed 0.19 pickles into its checkpoints (optimizer states of
# stages 1-3: the stage enum, the loss scaler, fragment addresses). Loading allows these and nothing else.
DS_CHECKPOINT_GLOBALS = [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


# ---------------------------------------------------------------------- configuration


def lazy_reg_ratio(cfg, side: str) -> float:
    """StyleGAN2's lazy regularization: when a network's regularizer runs every `interval` steps as
    its own optimizer step, lr and betas are rescaled by interval / (interval + 1) so that the
    optimizer sees the same effective schedule as with the regularizer in every step."""
    interval = cfg.schedule.G_reg_interval if side == "G" else cfg.schedule.D_reg_interval
    # D's regularizer: R1 and/or R2, which share the Dreg phase
    weight = cfg.loss.pl_weight if side == "G" else max(cfg.loss.r1_gamma, resolve_r2_gamma(cfg.loss))
    if not interval or interval < 1 or weight <= 0:
        return 1.0
    return interval / (interval + 1)


def ds_config(cfg, engine: str, world_size: int, device_type: str = "cpu", overrides: Optional[dict] = None,
              accum: Optional[int] = None) -> dict:
    """The DeepSpeed config dict of engine "G" or "D" (a fresh dict per call: engines must not share one).

    batch: train_batch_size = schedule.batch_size = batch_gpu x world_size x gradient_accumulation_steps
    (UsageError when it does not divide). accum: the gradient_accumulation_steps when the caller has
    checked the world already (build_engines does, once for both engines); None: checked here.
    zero_optimization.stage from dist.zero_stage_G / _D; small buckets on the CPU. Precision from
    dist.precision. gradient_clipping from loss.grad_clip (0: off).
    No "optimizer" block: build_engines passes a client optimizer. `overrides` is merged in last
    (nested dicts merge key by key), e.g. {"zero_optimization": {"stage3_param_persistence_threshold": 0}}."""
    if engine not in ("G", "D"):
        raise ValueError(f"engine must be 'G' or 'D', got {engine!r}")
    precision = cfg.dist.precision
    if precision not in PRECISIONS:
        raise UsageError(f"config key 'dist.precision' is {precision!r}; allowed: {', '.join(PRECISIONS)}")
    stage = int(cfg.dist.zero_stage_G if engine == "G" else cfg.dist.zero_stage_D)
    zero = {"stage": stage}
    if device_type == "cpu":
        zero.update(
            reduce_bucket_size=CPU_BUCKET_ELEMENTS,
            allgather_bucket_size=CPU_BUCKET_ELEMENTS,
            stage3_prefetch_bucket_size=CPU_BUCKET_ELEMENTS,
        )
    config = {
        "train_batch_size": int(cfg.schedule.batch_size),
        "train_micro_batch_size_per_gpu": int(cfg.schedule.batch_gpu),
        "gradient_accumulation_steps": check_world(cfg, world_size) if accum is None else int(accum),
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "gradient_clipping": float(cfg.loss.grad_clip or 0.0),
        # SkippableAdam is a torch Adam subclass; DeepSpeed's ZeRO allow-list compares exact types.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**62,  # our loop reports progress
        "wall_clock_breakdown": False,
    }
    return _merge(config, overrides or {})


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ---------------------------------------------------------------------- optimizer and non-finite guard


class SkippableAdam(torch.optim.Adam):
    """torch Adam whose update can be cancelled for one step: with `skip_next_step` set, step()
    leaves parameters and Adam state (moments, step count) untouched. Every ZeRO stage ends in a
    call to this step(), so one switch skips the update everywhere; DeepSpeed then zeroes the
    gradients and counts its micro-steps as usual. (In fp32, ZeRO 1-3 already refuse a step whose
    gradient norm is not finite; stage 0 calls this step() directly and checks nothing.)"""

    skip_next_step = False

    def step(self, closure=None):
        if self.skip_next_step:
            return None
        return super().step(closure)


class NonFiniteGradWatch:
    """Notes whether any gradient of a module's parameters was inf/NaN since the last reset(). A
    tensor hook sees each gradient as autograd produces it, before DeepSpeed reduces or partitions it,
    the same way on every stage. The flag stays on the device (no sync per backward)."""

    def __init__(self, module: nn.Module):
        self.flag = None
        self.handles = [p.register_hook(self._check) for p in module.parameters() if p.requires_grad]

    def _check(self, grad):
        bad = ~torch.isfinite(grad).all()
        self.flag = bad if self.flag is None else self.flag | bad
        # returning None leaves the gradient as it is

    def reset(self):
        self.flag = None

    def seen_nonfinite(self) -> bool:
        return bool(self.flag) if self.flag is not None else False

    def remove(self):
        for handle in self.handles:
            handle.remove()


# ---------------------------------------------------------------------- engines


@dataclass
class Engines:
    """What build_engines returns. G / D are DeepSpeed engines (the raw networks: G.module, D.module);
    G_ema is a plain module on every rank. G_opt / D_opt are the client optimizers (set lr through
    them: textgan.train.schedules.apply_lr(engines.G_opt, engines.G_base_lr, multiplier)); base lrs
    already include the lazy-regularization ratio. accum = gradient_accumulation_steps."""

    G: "deepspeed.DeepSpeedEngine"
    D: "deepspeed.DeepSpeedEngine"
    G_ema: nn.Module
    G_stage: int
    D_stage: int
    G_opt: SkippableAdam
    D_opt: SkippableAdam
    G_base_lr: float
    D_base_lr: float
    G_watch: NonFiniteGradWatch
    D_watch: NonFiniteGradWatch
    accum: int
    precision: str
    dtype: torch.dtype  # what inputs to the networks must be cast to
    runtime: object  # textgan.runtime.Runtime


def _adam(params, lr, cfg, ratio) -> SkippableAdam:
    beta1, beta2 = (float(b) ** ratio for b in cfg.optim.betas)  # floats: an int beta raises in DeepSpeed
    return SkippableAdam(params, lr=float(lr) * ratio, betas=(beta1, beta2), eps=float(cfg.optim.eps))


def build_engines(G: nn.Module, D: nn.Module, cfg, runtime, ds_overrides: Optional[dict] = None) -> Engines:
    """Wrap G and D in DeepSpeed engines (the process group must exist: runtime.init_distributed()).
    G_ema is copied from G first. ds_overrides: merged into both engines' configs (see ds_config)."""
    precision = cfg.dist.precision
    if precision == "fp16" and runtime.device.type == "cpu":
        raise UsageError("config key 'dist.precision' is fp16, which DeepSpeed does not support on the CPU; use fp32")
    for name, module in (("G", G), ("D", D)):
        scalars = [n for n, p in module.named_parameters() if p.dim() == 0]
        if scalars:  # DeepSpeed crashes on them at initialize ("self.dim() cannot be 0 ...")
            raise ValueError(f"{name} has zero-dimensional parameters {scalars}; give them shape [1]")
    G_ema = copy.deepcopy(G).eval().requires_grad_(False).to(runtime.device)
    show_once(logging.getLogger("DeepSpeed"), UNTESTED_OPTIMIZER_WARNING)
    accum = check_world(cfg, runtime.world_size)
    # DeepSpeed adopts the process group the runtime started (deepspeed.comm wraps torch.distributed's
    # default group) instead of creating a second one.
    deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())
    built = {}
    for side, module, lr in (("G", G, cfg.optim.G_lr), ("D", D, cfg.optim.D_lr)):
        ratio = lazy_reg_ratio(cfg, side)
        optimizer = _adam(module.parameters(), lr, cfg, ratio)
        config = ds_config(cfg, side, runtime.world_size, runtime.device.type, ds_overrides, accum=accum)
        engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=config, dist_init_required=False)
        _load_weights_only(engine)
        built[side] = (engine, optimizer, float(lr) * ratio, config["zero_optimization"]["stage"])
    (G_engine, G_opt, G_lr, G_stage), (D_engine, D_opt, D_lr, D_stage) = built["G"], built["D"]
    return Engines(
        G=G_engine, D=D_engine, G_ema=G_ema, G_stage=G_stage, D_stage=D_stage, G_opt=G_opt, D_opt=D_opt,
        G_base_lr=G_lr, D_base_lr=D_lr, G_watch=NonFiniteGradWatch(G_engine.module),
        D_watch=NonFiniteGradWatch(D_engine.module), accum=accum, precision=precision,
        dtype=PRECISIONS[precision], runtime=runtime,
    )


class _WeightsOnlyLoads:
    """DeepSpeed's checkpoint engine with `load` replaced: torch.load(weights_only=True) allowing only
    DS_CHECKPOINT_GLOBALS. DeepSpeed's own TorchCheckpointEngine.load passes weights_only=False, which
    would unpickle arbitrary objects from a checkpoint directory. Saving is untouched."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def load(self, path, map_location=None):
        with torch.serialization.safe_globals(DS_CHECKPOINT_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)


def _load_weights_only(engine) -> None:
    if not isinstance(engine.checkpoint_engine, _WeightsOnlyLoads):
        engine.checkpoint_engine = _WeightsOnlyLoads(engine.checkpoint_engine)


# ---------------------------------------------------------------------- phase helpers


@contextlib.contextmanager
def frozen(module: nn.Module):
    """requires_grad=False on all of module's parameters inside the block, restored after. The G
    phase backpropagates through D to G; D must not collect gradients there (see module docstring)."""
    saved = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, requires_grad in saved:
            p.requires_grad_(requires_grad)


@contextlib.contextmanager
def keep_gathered(module: nn.Module, stage: int):
    """On ZeRO-3, keep all of module's parameters gathered from a forward to the end of its backward
    (run engine.backward inside the block, engine.step after it); on stages 0-2 do nothing. Needed by
    losses that differentiate twice (R1 through D, the path length through G) and by penalties on the
    weights themselves (orthogonal, L2), which read parameters outside any module forward.

    Why: ZeRO-3 gathers a module's parameters for its forward and again, through hooks on the
    module's outputs, for its backward, and releases them after each. The gradient that the second
    backward sends along the graph built by the first (create_graph=True) reaches the parameters
    through nodes that carry no such hooks, so it arrives at a released, empty parameter ("output
    with shape [0] doesn't match the broadcast shape"). Inside this block the parameters are gathered
    and marked in use by a sentinel submodule id, so ZeRO-3's hooks do not release them. The known
    workaround (a saved_tensors_hooks that clones saved ds parameters) is not enough for these networks,
    where every parameter is partitioned: the failure is in the gradient accumulation, not in a
    saved tensor. (ds_persist does not help either: before its trace is complete, ZeRO-3 releases
    persistent parameters too.)
    Call engine.step() after the block: the step updates the partitions, and leaving the block
    drops the (then stale) gathered copies."""
    if stage != 3:
        yield
        return
    params = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        for p in params:
            p.ds_active_sub_modules.add(_KEEP_GATHERED)
        try:
            yield
        finally:
            for p in params:
                p.ds_active_sub_modules.discard(_KEEP_GATHERED)


# ZeRO-3 releases a parameter only when no submodule is marked active on it (ds_active_sub_modules,
# which GatheredParameters also checks on exit); this id, which no module has, pins the parameters.
_KEEP_GATHERED = -1


def gathered(module: nn.Module, stage: int, modifier_rank=None):
    """All of module's parameters whole inside the block on ZeRO-3 (collective); a no-op otherwise."""
    return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=modifier_rank,
                                             enabled=stage == 3)


def _fp32_values(module: nn.Module, stage: int, precision: str):
    """Yield (name, full fp32 value) of module's parameters, inside a gathered block on ZeRO-3 fp32.
    In bf16/fp16 the value is the optimizer's fp32 master (collective on ZeRO 1-3), else the weight."""
    named = list(module.named_parameters())
    if precision == "fp32":
        with gathered(module, stage):
            for name, p in named:
                yield name, p.detach()
        return
    for name, p in named:
        master = safe_get_full_fp32_param(p)
        shape = p.ds_shape if hasattr(p, "ds_shape") else p.shape
        yield name, (p.detach().float() if master is None else master.reshape(shape))


@torch.no_grad()
def update_ema(G_ema: nn.Module, G_module: nn.Module, beta: float, zero_stage: int, precision: str = "fp32") -> None:
    """G_ema <- lerp(G, G_ema, beta) for parameters (StyleGAN: beta near 1 keeps most of G_ema);
    buffers (w_avg, noise constants, BatchNorm statistics) are copied. Collective on ZeRO-3 and in
    bf16: every rank calls it."""
    ema_params = dict(G_ema.named_parameters())
    for name, value in _fp32_values(G_module, zero_stage, precision):
        p_ema = ema_params[name]
        p_ema.copy_(value.to(p_ema.dtype).lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G_module.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def full_state_dict(module: nn.Module, stage: int, precision: str = "fp32") -> dict:
    """A plain state dict of module on the CPU: full fp32 parameters (gathered on ZeRO-3, the fp32
    masters in bf16/fp16) and buffers. Collective on ZeRO-3 and in bf16: every rank calls it."""
    params = {name: value.float().cpu().clone() for name, value in _fp32_values(module, stage, precision)}
    out = {}
    for name, value in module.state_dict().items():
        out[name] = params[name] if name in params else value.detach().cpu().clone()
    return out


@torch.no_grad()
def sync_buffers(module: nn.Module, runtime) -> None:
    """Give every rank rank 0's buffers. Buffers updated in training (G's w_avg, BatchNorm
    statistics) drift apart between ranks, which see different batches; DeepSpeed broadcasts them only
    at initialize. One coalesced broadcast (what DDP's broadcast_buffers does each forward)."""
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if runtime.world_size == 1 or not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    runtime.broadcast_(flat, src=0)
    offset = 0
    for b in buffers:
        b.copy_(flat[offset: offset + b.numel()].view_as(b))
        offset += b.numel()
