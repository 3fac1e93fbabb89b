"""One training iteration: the four phases of StyleGAN2-ADA on the two DeepSpeed engines.

    setup = build_training(cfg, runtime)          # textgan.train.setup
    state = TrainState()
    stats = train_step(setup, batch_iter, state)

Order: Gmain, Greg (every G_reg_interval iterations), Dmain, Dreg (every D_reg_interval), then G_ema;
the phases are declared once (textgan.losses.phases) and each micro-batch of a phase is one call of
objective.phase_loss(phase, inputs).
Each phase runs exactly `engines.accum` micro-batches, each with engine.backward() and engine.step():
DeepSpeed counts micro-steps per engine and applies the optimizer on the last one, so a phase that
did fewer would shift every later boundary. The iteration fetches `accum` micro-batches of reals
(batch_gpu each) once; all phases use them, and fakes are conditioned on the same captions.

How each network is called (why: textgan/train/engines.py; pinned by tests/test_engines.py): G phases
run D as the raw module with its parameters frozen; Dmain runs D through the engine and G as the raw
module (the objective wraps it in no_grad); Dreg runs the raw D module (and, for R2's fakes, G as Dmain
does). Greg and Dreg (and the main phases when weight penalties are on) run forward and backward inside
keep_gathered: ZeRO-3 keeps the network gathered for the double backward.

Non-finite guard: every loss term, (through hooks) every gradient and every floating buffer of G and
D is checked; before the phase's last engine.step() the ranks agree with one all-reduce, and a bad
phase is skipped on all of them: SkippableAdam leaves weights and Adam state alone, and the buffers of
both networks (BatchNorm statistics, w_avg) go back to what they were before the phase. The buffers
matter because forward passes move them even where no gradient flows (G runs in train mode inside
Dmain, D inside the G phases), and G_ema and the checkpoints copy them: a BatchNorm running_var of inf
makes G_ema draw the same image for every input. The iteration counts as non-finite if any phase was
skipped; after schedule.max_nonfinite_steps in a row, NonFiniteLossError names the terms.
"""

import contextlib
from collections import defaultdict
from dataclasses import asdict, dataclass

import torch

from textgan.losses.contrastive_terms import noisy_condition
from textgan.losses.objective import PL_MEAN_KEY
from textgan.losses.phases import Phase, PhaseInputs
from textgan.nets import mix_styles
from textgan.train.ema import ema_beta
from textgan.train.engines import frozen, keep_gathered, sync_buffers, update_ema
from textgan.train.micro_batch import MicroBatch


class NonFiniteLossError(RuntimeError):
    """Too many iterations in a row had non-finite losses or gradients."""


@dataclass
class TrainState:
    """Progress that a checkpoint must carry (besides weights and optimizers). The loop owns tick;
    train_step advances cur_nimg and batch_idx and keeps pl_mean (identical on every rank)."""

    cur_nimg: int = 0
    batch_idx: int = 0  # iterations done; decides when the lazy regularization phases run
    tick: int = 0
    pl_mean: float = 0.0
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0
    nonfinite_reason: str = ""  # what the last skipped iteration found (for the log)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if not hasattr(self, key):
                raise ValueError(f"unknown TrainState field {key!r} in checkpoint")
            setattr(self, key, type(getattr(self, key))(value))


def phases_due(cfg, objective, batch_idx: int) -> list:
    """The Phases of iteration `batch_idx` (a regularization phase runs when batch_idx % interval == 0,
    so the very first iteration has all four; interval 0 or a zero weight disables it)."""
    phases = objective.phases(cfg.schedule.G_reg_interval, cfg.schedule.D_reg_interval)
    return [phase for phase in phases if phase.due(batch_idx)]


def _nonfinite_terms(out: dict) -> list:
    """Names of the non-finite loss terms (or "total"); one host sync when all are finite."""
    checked = {k: v for k, v in out.items() if k.startswith("Loss/") or k == "total"}
    if bool(torch.stack([v.detach().float().reshape(()) for v in checked.values()]).isfinite().all()):
        return []
    bad = [k for k, v in checked.items() if k != "total" and not bool(torch.isfinite(v).all())]
    return bad or ["total"]


class _Phase:
    """Runs one phase's micro-batches on its engine and decides, across ranks, whether to apply it."""

    def __init__(self, phase: Phase, engines, runtime):
        self.name = phase.name
        side = phase.network
        self.engine = engines.G if side == "G" else engines.D
        self.opt = engines.G_opt if side == "G" else engines.D_opt
        self.watch = engines.G_watch if side == "G" else engines.D_watch
        self.side = side
        self.accum = engines.accum
        # fp16's loss scaler overflows now and then by design; DeepSpeed skips those steps itself.
        self.check_grads = engines.precision != "fp16"
        self.runtime = runtime
        self.bad_terms = set()
        self.stats = defaultdict(list)
        self.watch.reset()
        # Every buffer of both networks as it was before the phase, to put back if it is skipped.
        self.buffers = [(f"{side}.{name}", b) for side, module in (("G", engines.G.module), ("D", engines.D.module))
                        for name, b in module.named_buffers()]
        self.saved_buffers = [b.detach().clone() for _, b in self.buffers]

    def backward(self, out: dict) -> None:
        self.bad_terms.update(_nonfinite_terms(out))
        for key, value in out.items():
            if key != "total":
                self.stats[key].append(value.detach().float())
        self.engine.backward(out["total"])

    def step(self, index: int) -> None:
        """engine.step() on every micro-batch; on the last one the ranks first agree on skipping."""
        if index == self.accum - 1:
            self.skipped = self._agree_to_skip()
            self.opt.skip_next_step = self.skipped
        try:
            self.engine.step()
        finally:
            self.opt.skip_next_step = False

    def _agree_to_skip(self) -> bool:
        grads_bad = self.check_grads and self.watch.seen_nonfinite()
        floating = [b for _, b in self.buffers if b.is_floating_point()]
        buffers_ok = torch.stack([b.isfinite().all() for b in floating]).all() if floating else torch.tensor(True)
        # One tensor, one all-reduce, one host sync: the buffers' verdict never leaves the device alone.
        local = (~buffers_ok).float().reshape(1).to(self.runtime.device)
        if self.bad_terms or grads_bad:
            local.fill_(1.0)
        if not bool(self.runtime.all_reduce_max(local).item()):
            return False
        # Rare path, entered by all ranks together: learn what went wrong where.
        bad_buffers = [n for n, b in self.buffers if b.is_floating_point() and not bool(b.isfinite().all())]
        reports = self.runtime.all_gather_object((sorted(self.bad_terms), grads_bad, bad_buffers))
        terms = sorted({t for names, _, _ in reports for t in names})
        buffers = sorted({n for _, _, names in reports for n in names})
        ranks = [r for r, (names, g, bufs) in enumerate(reports) if names or g or bufs]
        where = f"phase {self.name}, rank(s) {ranks}"
        if terms:
            self.reason = f"{', '.join(terms)} ({where})"
        elif any(g for _, g, _ in reports):
            self.reason = f"gradients of {self.side} ({where}; the loss terms were finite)"
        else:
            self.reason = f"buffers {', '.join(buffers)} ({where}; the loss terms and gradients were finite)"
        return True

    def restore_buffers(self) -> None:
        """Put every buffer of G and D back as it was before this phase (on every rank alike)."""
        with torch.no_grad():
            for (_, b), saved in zip(self.buffers, self.saved_buffers):
                b.copy_(saved)

    def summary(self) -> dict:
        return {k: torch.stack(v).mean() for k, v in self.stats.items()}


def generator_fn(G_module, style_mixing_prob: float, update_w_avg: bool = False):
    """G_fn(z, c) -> (img, ws) for the objective (cgan, which has no styles: img only).

    mapping and synthesis are called one after the other rather than through G.forward: under ZeRO-3
    DeepSpeed passes every module's outputs through an autograd function, so the ws that G.forward
    returns is a copy, not the tensor synthesis consumed, and Greg's gradient w.r.t. it is undefined
    ("appears to not have been used in the graph").

    Style mixing as in StyleGAN2-ADA: the second mapping runs on every call and a cutoff of num_ws
    means "no mixing". G.style_mixing skips that mapping when it does not mix, a decision each rank
    draws for itself; under ZeRO-3 every rank must run the same modules (each forward gathers its
    parameters collectively), so ranks that disagree would hang or crash."""
    if not hasattr(G_module, "mapping"):
        return lambda z, c: G_module(z, c)
    num_ws = G_module.num_ws

    def G_fn(z, c):
        ws = G_module.mapping(z, c, update_w_avg=update_w_avg)
        if style_mixing_prob > 0:
            mix, cutoff = torch.rand([]), int(torch.randint(1, num_ws, []))
            ws2 = G_module.mapping(torch.randn_like(z), c)
            ws = mix_styles(ws, ws2, cutoff if mix < style_mixing_prob else num_ws)
        return G_module.synthesis(ws), ws

    return G_fn


def _phase_context(phase: Phase, engines, weight_penalties: bool) -> contextlib.ExitStack:
    """What must hold around a phase's forward and backward (not its step): D frozen in the G
    phases; on ZeRO-3 the network kept gathered where a loss differentiates twice or reads weights."""
    stack = contextlib.ExitStack()
    if phase.network == "G":
        stack.enter_context(frozen(engines.D.module))
    if phase.kind == "reg" or weight_penalties:
        if phase.network == "G":
            stack.enter_context(keep_gathered(engines.G.module, engines.G_stage))
        else:
            stack.enter_context(keep_gathered(engines.D.module, engines.D_stage))
    return stack


class _Calls:
    """How each phase calls the networks (why: the module docstring and textgan/train/engines.py)."""

    def __init__(self, engines, cfg, runtime, objective):
        self.G_module, self.D_module, self.D_engine = engines.G.module, engines.D.module, engines.D
        self.r2_fakes = objective.uses_r2  # Dreg generates fakes for R2
        mixing = float(cfg.loss.style_mixing_prob)
        self.G_fn = generator_fn(self.G_module, mixing)
        self.G_fn_main = generator_fn(self.G_module, mixing, update_w_avg=True)  # w_avg follows Gmain's latents
        self.heads = getattr(self.D_module, "contrastive", None)
        self.text_noise = float(cfg.contrastive.text_noise)
        self.mean_fn = runtime.all_reduce_mean

    def inputs(self, phase: Phase, mb: MicroBatch, z, pl_mean) -> PhaseInputs:
        """One micro-batch's PhaseInputs. Text noise is drawn here, only by the phases that use it."""
        inputs = PhaseInputs(G_fn=self.G_fn, D_fn=self.D_module, z=z, c=mb.c, reals=mb.reals, ids=mb.ids,
                             heads=self.heads, G_module=self.G_module, D_module=self.D_module, pl_mean=pl_mean,
                             mean_fn=self.mean_fn)
        if phase.key == ("G", "main"):
            inputs.c_G, inputs.c, inputs.pairs = mb.generator_inputs(self.text_noise)
            inputs.G_fn = self.G_fn_main
        elif phase.key == ("D", "main"):
            inputs.D_fn = self.D_engine  # the one phase that runs D through its engine
            inputs.c_G = noisy_condition(mb.c, self.text_noise) if self.text_noise > 0 else None
        elif phase.key == ("D", "reg") and self.r2_fakes and self.text_noise > 0:
            # R2's fakes are made as Dmain's are, so that it penalizes D where D meets G's images
            inputs.c_G = noisy_condition(mb.c, self.text_noise)
        return inputs


def train_step(setup, batch_iter, state: TrainState) -> dict:
    """One iteration. setup: what textgan.train.setup.build_training returns (cfg, runtime, engines,
    objective, c_encoder, real_source). batch_iter yields loader batches (dicts with uint8 "pixels"
    [batch_gpu, R, R, C], or a float "image" [batch_gpu, C, R, R] in [-1, 1]: micro_batch.real_images); setup.c_encoder(batch) -> c [batch_gpu, c_dim] (the text
    embedding; c_encoder.alt(batch) embeds the other captions when contrastive terms want them);
    setup.real_source: the contrastive terms' real-image features, None without them. Mutates `state`
    (cur_nimg += batch_size, batch_idx += 1, pl_mean, non-finite counters) and returns this rank's
    stats: {"Loss/..": tensor, "Stats/..": tensor} averaged over the micro-batches of the phases that
    were applied, plus "Health/nonfinite_skips" (phases skipped now)."""
    cfg, runtime, engines, objective = setup.cfg, setup.runtime, setup.engines, setup.objective
    device, dtype = runtime.device, engines.dtype
    batch_gpu = cfg.schedule.batch_gpu
    G_module, D_module = engines.G.module, engines.D.module
    micro = [MicroBatch(next(batch_iter), setup.c_encoder, device, dtype, objective.contrastive, setup.real_source)
             for _ in range(engines.accum)]
    calls = _Calls(engines, cfg, runtime, objective)

    penalties = cfg.loss.ortho_reg > 0 or cfg.loss.weight_decay > 0
    stats, reasons, skipped = {}, [], 0
    for phase in phases_due(cfg, objective, state.batch_idx):
        # All latents of a phase in one draw: the same numbers whatever the accumulation split.
        zs = torch.randn([engines.accum * batch_gpu, G_module.z_dim], device=device).to(dtype).split(batch_gpu)
        run = _Phase(phase, engines, runtime)
        pl_mean_before = state.pl_mean
        for i, (mb, z) in enumerate(zip(micro, zs)):
            with _phase_context(phase, engines, penalties):
                out = objective.phase_loss(phase, calls.inputs(phase, mb, z, state.pl_mean))
                if phase.key == ("G", "reg"):
                    state.pl_mean = float(out[PL_MEAN_KEY])
                run.backward(out)
            run.step(i)
        if run.skipped:
            run.restore_buffers()
            skipped += 1
            reasons.append(run.reason)
            state.pl_mean = pl_mean_before  # a non-finite length must not poison the running mean
        else:
            stats.update(run.summary())

    # Buffers (w_avg) follow rank 0 on every rank, then G_ema follows G.
    sync_buffers(G_module, runtime)
    sync_buffers(D_module, runtime)
    beta = ema_beta(cfg, cfg.schedule.batch_size, state.cur_nimg)
    update_ema(engines.G_ema, G_module, beta, engines.G_stage, engines.precision)

    state.cur_nimg += cfg.schedule.batch_size
    state.batch_idx += 1
    stats["Health/nonfinite_skips"] = skipped
    _count_nonfinite(state, skipped, reasons, cfg)
    return stats


def _count_nonfinite(state: TrainState, skipped: int, reasons: list, cfg) -> None:
    if not skipped:
        state.nonfinite_in_a_row = 0
        return
    state.nonfinite_in_a_row += 1
    state.nonfinite_total += 1
    state.nonfinite_reason = "; ".join(reasons)
    limit = max(1, int(cfg.schedule.max_nonfinite_steps))
    if state.nonfinite_in_a_row >= limit:
        raise NonFiniteLossError(
            f"non-finite {state.nonfinite_reason} for {state.nonfinite_in_a_row} iterations in a row "
            f"(schedule.max_nonfinite_steps={cfg.schedule.max_nonfinite_steps}) at cur_nimg={state.cur_nimg}; "
            "stopping. Those steps were skipped, so the weights and the newest checkpoint are the last good "
            "state. Lower optim.G_lr / optim.D_lr, set loss.grad_clip, or check the data."
        )
