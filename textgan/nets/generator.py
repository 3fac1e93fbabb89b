"""StyleGAN2 generator conditioned on a text embedding c (e.g. a CLIP text embedding).

mapping:   (z, c) -> w, broadcast to ws [N, num_ws, w_dim] (one w per modulated layer)
synthesis: ws -> image [N, img_channels, R, R], skip architecture: every resolution adds its ToRGB
           output to the upsampled image of the previous one. No tanh: like StyleGAN the output is
           unbounded and learns to stay roughly in [-1, 1], the range of the training images.

Truncation pulls w toward an average w with psi in [0, 1]. For text-to-image the useful centre is the
*conditional* average for the given text (`conditional_w_avg`), not the global average over all
captions (the `w_avg` buffer tracked during training), which would pull every image toward the same
"average caption".

Randomness (noise inputs, style mixing) can be drawn from a `torch.Generator` on the tensors' device
for reproducible results; `noise_mode="const"` uses the fixed per-layer noise buffers.
"""

import torch
from torch import nn

from .layers import (
    ConditionMapping,
    EqualLinear,
    SynthesisLayer,
    ToRGB,
    channels_per_resolution,
    check_c_dim,
    check_condition,
    check_noise_mode,
    fir_filter,
    memory_format,
    normalize_2nd_moment,
    upsample2d,
)


def mix_styles(ws1: torch.Tensor, ws2: torch.Tensor, cutoff: int) -> torch.Tensor:
    """ws1 for the layers before `cutoff`, ws2 from `cutoff` on (coarse styles from one latent,
    fine styles from another)."""
    return torch.cat([ws1[:, :cutoff], ws2[:, cutoff:]], dim=1)


class MappingNetwork(nn.Module):
    """z and the text embedding c -> w. Both inputs are normalised to unit second moment (c after a
    learned linear embedding), so neither dominates the concatenation whatever its scale; then an MLP
    with a reduced learning rate (lr_mul 0.01, as in StyleGAN)."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, lr_mul=0.01, w_avg_beta=0.995, c_embed_layers=0):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"mapping_layers must be >= 1, got {num_layers}.")
        if c_embed_layers < 0:
            raise ValueError(f"c_embed_layers must be >= 0, got {c_embed_layers}.")
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        self.c_norm = nn.Identity()  # a ConditionNorm when model.c_norm is set (textgan.nets.condition_norm)
        # c's embedding learns at the full rate (the MLP below at lr_mul): StyleGAN2-ADA's one linear layer, or
        # with model.c_embed_layers an MLP of its own on the normalised c (textgan.nets.cgan says why).
        self.embed = ConditionMapping(c_dim, w_dim, c_embed_layers) if c_embed_layers else EqualLinear(c_dim, w_dim)
        dims = [z_dim + w_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            EqualLinear(dims[i], dims[i + 1], activation="lrelu", lr_mul=lr_mul) for i in range(num_layers)
        )
        # Running mean of w over training (all captions): the default truncation centre. A buffer so
        # that it is saved, copied into G_ema and broadcast with the module.
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c, psi=1.0, truncation_cutoff=None, update_w_avg=False, w_avg=None):
        """ws [N, num_ws, w_dim]. psi < 1 lerps the first `truncation_cutoff` ws (all if None) toward
        `w_avg` ([w_dim] or [N, w_dim], e.g. from conditional_w_avg), by default the tracked buffer."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"mapping: z must have shape [N, {self.z_dim}], got {list(z.shape)}.")
        check_condition(c, z.shape[0], self.c_dim, "mapping")
        x = torch.cat([normalize_2nd_moment(z), normalize_2nd_moment(self.embed(self.c_norm(c)))], dim=1)
        for layer in self.layers:
            x = layer(x)
        if update_w_avg:
            # In fp32 whatever the parameters' dtype: DeepSpeed's bf16/fp16 casts parameters but not
            # buffers (w_avg stays fp32), and a beta of 0.995 needs more precision than bf16 has.
            with torch.no_grad():
                batch_mean = x.detach().float().mean(dim=0)
                self.w_avg.copy_(batch_mean.lerp(self.w_avg.float(), self.w_avg_beta))
        ws = x.unsqueeze(1).expand(-1, self.num_ws, -1)
        if psi != 1:
            centre = self.w_avg if w_avg is None else w_avg
            centre = centre.to(ws.dtype).reshape(-1, 1, self.w_dim)
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws = torch.cat([centre.lerp(ws[:, :cut], psi), ws[:, cut:]], dim=1)
        return ws

    @torch.no_grad()
    def conditional_w_avg(self, c, num_samples=2048, seed=0, chunk=1024):
        """Mean w over `num_samples` seeded z for each text: c [c_dim] -> [w_dim], c [M, c_dim] ->
        [M, w_dim]. All texts use the same z (common random numbers), so differences between the
        averages come from the texts, not from sampling noise."""
        single = c.ndim == 1
        c = c.reshape(-1, self.c_dim) if single else c
        gen = torch.Generator(device=c.device).manual_seed(seed)
        z = torch.randn([num_samples, self.z_dim], generator=gen, device=c.device, dtype=c.dtype)
        averages = []
        for text in c:
            total = torch.zeros([self.w_dim], device=c.device, dtype=c.dtype)
            for zs in z.split(chunk):
                total += self(zs, text.expand(len(zs), -1))[:, 0].sum(dim=0)
            averages.append(total / num_samples)
        out = torch.stack(averages)
        return out[0] if single else out


class SynthesisBlock(nn.Module):
    """One resolution: (upsampling conv) + conv + ToRGB. The 4x4 block starts from a learned constant."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, channels_last=True):
        super().__init__()
        self.memory_format = memory_format(channels_last)
        self.resolution = resolution
        self.is_first = resolution == 4
        if self.is_first:
            self.const = nn.Parameter(torch.randn([out_channels, 4, 4]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, img_channels, w_dim)
        self.num_conv = 1 if self.is_first else 2
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x, img, ws, noise_mode, generator):
        """ws: [N, num_conv + 1, w_dim] (the last one is ToRGB's)."""
        w = iter(ws.unbind(dim=1))
        if self.is_first:
            # every later activation inherits this layout from its input
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1).contiguous(memory_format=self.memory_format)
        else:
            x = self.conv0(x, next(w), noise_mode, generator)
        x = self.conv1(x, next(w), noise_mode, generator)
        rgb = self.torgb(x, next(w))
        img = rgb if img is None else upsample2d(img, self.resample_filter) + rgb
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels=3, size=1.0, channel_base=32768, channel_max=512,
                 channels_last=True):
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels_per_resolution(img_resolution, channel_base, channel_max, size)
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.blocks = nn.ModuleList()
        for r in self.channels:  # 4 .. R
            in_ch = self.channels[r // 2] if r > 4 else 0
            self.blocks.append(SynthesisBlock(in_ch, self.channels[r], w_dim, r, img_channels, channels_last))
        # ToRGB of block i shares its w with the first conv of block i+1 (StyleGAN2's layout).
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1

    def forward(self, ws, noise_mode="random", generator=None):
        check_noise_mode(noise_mode)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"synthesis: ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}.")
        x = img = None
        w_idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + 1), noise_mode, generator)
            w_idx += block.num_conv
        # The images leave in the default layout, whatever G computes in: a copy of 3 channels, and every
        # consumer (D, augmentation, CLIP, image files) sees the same tensors as before.
        return img.contiguous()


class Generator(nn.Module):
    """Text-conditional StyleGAN2 generator. `size` is the channel multiplier; channels at resolution
    r are min(channel_base / r, channel_max) * size (config F: channel_base 32768, channel_max 512)."""

    def __init__(
        self,
        z_dim,
        c_dim,
        w_dim=512,
        img_resolution=256,
        img_channels=3,
        size=1.0,
        channel_base=32768,
        channel_max=512,
        mapping_layers=8,
        mapping_lr_mul=0.01,
        w_avg_beta=0.995,
        c_embed_layers=0,
        channels_last=True,
    ):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, check_c_dim(c_dim), w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, size, channel_base, channel_max,
                                          channels_last)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_mul, w_avg_beta,
                                      c_embed_layers)

    def forward(
        self,
        z,
        c,
        psi=1.0,
        truncation_cutoff=None,
        noise_mode="random",
        w_avg=None,
        update_w_avg=False,
        style_mixing_prob=0.0,
        generator=None,
        return_ws=False,
    ):
        """Images [N, img_channels, R, R] (and the ws used, if return_ws)."""
        ws = self.mapping(z, c, psi=psi, truncation_cutoff=truncation_cutoff, update_w_avg=update_w_avg, w_avg=w_avg)
        if style_mixing_prob > 0:
            ws = self.style_mixing(ws, c, style_mixing_prob, generator)
        img = self.synthesis(ws, noise_mode=noise_mode, generator=generator)
        return (img, ws) if return_ws else img

    def style_mixing(self, ws, c, prob, generator=None):
        """With probability `prob`, give the layers from a random cutoff (uniform in [1, num_ws)) on
        the ws of fresh latents for the same texts; one draw per batch, as in StyleGAN2-ADA. Trains
        the layers not to rely on neighbouring styles coming from the same latent. The fresh ws are not
        truncated: mixing is a training-time regularizer, and training samples with psi = 1.

        With prob > 0 the second mapping runs on every call, mixing or not (a cutoff of num_ws keeps
        all of ws), as in StyleGAN2-ADA: the draw differs between ranks, and under ZeRO-3 every rank
        must run the same modules (each forward gathers its parameters collectively). prob <= 0 is a
        setting, the same on every rank, and skips the mapping."""
        if prob <= 0:
            return ws
        device = ws.device
        mix = torch.rand([], generator=generator, device=device) < prob
        cutoff = int(torch.randint(1, self.num_ws, [], generator=generator, device=device))
        z2 = torch.randn([ws.shape[0], self.z_dim], generator=generator, device=device, dtype=ws.dtype)
        ws2 = self.mapping(z2, c)
        return mix_styles(ws, ws2, cutoff if bool(mix) else self.num_ws)

    def conditional_w_avg(self, c, num_samples=2048, seed=0):
        """Average w for each text (see MappingNetwork.conditional_w_avg); pass it as `w_avg` with
        psi < 1 to truncate toward the typical image for that text."""
        return self.mapping.conditional_w_avg(c, num_samples=num_samples, seed=seed)
