"""How fast G_ema follows G (StyleGAN2-ADA's schedule). Pure arithmetic; the update itself, which
needs ZeRO-3's parameter gathering, is textgan.train.engines.update_ema.

G_ema averages G over the last `ema_kimg` thousand images: per step of `batch_size` images it keeps
beta = 0.5 ** (batch_size / ema_nimg) of itself, i.e. a half-life of ema_nimg images. Early in training
the half-life ramps up with progress (ema_rampup x cur_nimg), so G_ema does not drag along the
random initialisation for the first ema_kimg thousand images.
"""


def ema_beta(cfg, batch_size: int, cur_nimg: int) -> float:
    """beta for the step that starts at cur_nimg; cfg.schedule.ema_kimg and ema_rampup (None: off)."""
    ema_nimg = cfg.schedule.ema_kimg * 1000
    if cfg.schedule.ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * cfg.schedule.ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))
