"""StyleGAN2 building blocks in plain PyTorch: no custom CUDA ops, so the same code runs on CPU and
GPU, and every op supports double backward (R1 and path-length regularization need it).

Conventions (StyleGAN2 config F):
* Equalized learning rate: parameters are stored with unit variance (divided by lr_mul) and scaled
  at run time by lr_mul / sqrt(fan_in). Adam's step size is then the same for every layer relative
  to the weight's effective scale, whatever its fan-in.
* Leaky ReLU (slope 0.2) is followed by a gain of sqrt(2), which keeps the activations' second
  moment roughly constant from layer to layer.
* Resampling uses the separable FIR filter [1, 3, 3, 1] (half-pixel centred, like bilinear), built
  from depthwise conv2d so that it stays differentiable twice.
* Every scalar parameter has shape [1]: DeepSpeed cannot initialize zero-dimensional parameters.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from textgan.ranges import RESOLUTIONS as ALLOWED_RESOLUTIONS, resolutions_text

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
ACTIVATIONS = ("linear", "lrelu")
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)


# ------------------------------------------------------------------ architecture helpers


def check_resolution(resolution: int) -> int:
    """Return `resolution` if both G and D can be built for it; ValueError naming the allowed ones."""
    if not isinstance(resolution, int) or resolution not in ALLOWED_RESOLUTIONS:
        raise ValueError(
            f"img_resolution={resolution!r} is not supported: use a power of two from 16 to 1024 ({resolutions_text()})."
        )
    return resolution


def channels_at(resolution: int, channel_base: int, channel_max: int, size: float) -> int:
    """Feature maps at one resolution: channel_base / resolution capped at channel_max, then scaled
    by the channel multiplier `size` (the research runs' 0.5 / 0.8 / 1.0), so that `size` scales
    every layer's width, including the capped low resolutions."""
    if size <= 0:
        raise ValueError(f"size (the channel multiplier) must be > 0, got {size!r}; the research runs used 0.5-1.0.")
    return max(1, round(min(channel_base / resolution, channel_max) * size))


def channels_per_resolution(img_resolution: int, channel_base: int, channel_max: int, size: float) -> dict:
    """{4: ch, 8: ch, ..., img_resolution: ch} for a supported img_resolution (ValueError otherwise)."""
    check_resolution(img_resolution)
    resolutions = [2**i for i in range(2, img_resolution.bit_length())]
    return {r: channels_at(r, channel_base, channel_max, size) for r in resolutions}


def check_c_dim(c_dim: int) -> int:
    if c_dim < 1:
        raise ValueError(f"c_dim must be >= 1 (the text embedding size, e.g. 512 for ViT-B-32), got {c_dim}.")
    return c_dim


def check_condition(c: torch.Tensor, n: int, c_dim: int, who: str) -> None:
    """c must be [n, c_dim]: one text embedding per sample."""
    if c.ndim != 2 or c.shape[0] != n or c.shape[1] != c_dim:
        raise ValueError(
            f"{who}: c must have shape [{n}, {c_dim}] (one text embedding of dim c_dim per sample), "
            f"got {list(c.shape)}."
        )


def check_images(img: torch.Tensor, channels: int, resolution: int, who: str) -> None:
    if img.ndim != 4 or tuple(img.shape[1:]) != (channels, resolution, resolution):
        raise ValueError(
            f"{who}: images must have shape [N, {channels}, {resolution}, {resolution}], got {list(img.shape)}."
        )


def check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not one of {ACTIVATIONS}.")
    return activation


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str, dim: int = 1) -> torch.Tensor:
    """Add `bias` along `dim`, then apply the activation (lrelu includes its sqrt(2) gain)."""
    if bias is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + bias.reshape(shape)
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
    return x


def memory_format(channels_last: bool) -> torch.memory_format:
    """The activations' layout inside G's synthesis and D (model.channels_last). Values are the same either way
    (within fp32 rounding: the convolutions sum in another order); channels_last (NHWC) is the layout oneDNN's
    CPU convolutions and tensor cores work in, so the big 3x3 convolutions skip a reorder each way, as NVIDIA's
    StyleGAN2-ADA runs its fp16 layers. Parameters keep the default layout (checkpoints do not change)."""
    return torch.channels_last if channels_last else torch.contiguous_format


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit mean square (StyleGAN's pixel norm on latent vectors)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


# ------------------------------------------------------------------ FIR resampling


def fir_filter(taps=FIR_TAPS) -> torch.Tensor:
    """Separable 2-D low-pass filter (outer product of the taps), normalised to unit sum."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0), gain: float = 1.0):
    """Upsample by zero insertion, pad (negative values crop), filter with `f`, keep every down-th pixel.
    The same `pad` applies to both axes: (before, after)."""
    n, c, h, w = x.shape
    if up > 1:
        # Interleave zeros: [.., h, 1, w, 1] padded to [.., h, up, w, up] and flattened back.
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    # conv2d correlates; flip to convolve (a no-op for the symmetric default filter, kept for any taps).
    kernel = (f * gain).flip([0, 1]).to(x.dtype)
    kernel = kernel[None, None].expand(c, 1, *f.shape)
    # The stride computes only the pixels that are kept: the same values as filtering everything and then
    # slicing [::down, ::down], at 1 / down**2 of the cost.
    return F.conv2d(x, kernel, groups=c, stride=down)


def upsample2d(x: torch.Tensor, f: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Resolution x factor; the gain factor**2 restores the energy the inserted zeros removed."""
    fw = f.shape[-1]
    return upfirdn2d(x, f, up=factor, pad=((fw + factor - 1) // 2, (fw - factor) // 2), gain=factor**2)


def downsample2d(x: torch.Tensor, f: torch.Tensor, factor: int = 2) -> torch.Tensor:
    fw = f.shape[-1]
    return upfirdn2d(x, f, down=factor, pad=((fw - factor + 1) // 2, (fw - factor) // 2))


def conv2d_resample(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
                    pointwise_at_full_resolution: bool = False):
    """'Same' convolution with an odd square kernel, optionally preceded by 2x FIR downsampling or
    followed by 2x upsampling. Up: transposed conv with stride 2 (the flipped kernel makes it equal
    to zero insertion followed by conv2d) and then the FIR filter; computing at the low resolution
    is ~4x cheaper than upsampling first. Down: FIR filter, then a strided conv; a 1x1 kernel instead
    runs after the filter has downsampled (pointwise_at_full_resolution: the strided order, for
    measuring against it)."""
    k = weight.shape[-1]
    if up == 1 and down == 1:
        return F.conv2d(x, weight, padding=k // 2)
    fw = f.shape[-1]
    if up == 2:
        x = F.conv_transpose2d(x, weight.transpose(0, 1).flip([2, 3]), stride=2)
        p = fw - k + 1  # the transposed conv gives 2H + k - 2 pixels; filtering must return 2H
        return upfirdn2d(x, f, pad=((p + 1) // 2, p // 2), gain=4)
    if down == 2 and k == 1 and not pointwise_at_full_resolution:
        # A 1x1 kernel only mixes channels, so it commutes with the per-channel filter; the strided conv would
        # read one filtered pixel in four, so filtering at the kept pixels alone is the same map, ~4x cheaper.
        return F.conv2d(downsample2d(x, f), weight)
    if down == 2:
        p = fw - 2 + k - 1
        x = upfirdn2d(x, f, pad=((p + 1) // 2, p // 2))
        return F.conv2d(x, weight, stride=2)
    raise ValueError(f"conv2d_resample supports up=2 or down=2 only, got up={up}, down={down}.")


# ------------------------------------------------------------------ equalized-lr layers


class EqualLinear(nn.Module):
    """Fully connected layer with equalized learning rate (see module docstring)."""

    def __init__(self, in_features, out_features, bias=True, bias_init=0.0, lr_mul=1.0, activation="linear"):
        super().__init__()
        self.activation = check_activation(activation)
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x):
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        if self.activation == "linear":
            return F.linear(x, w, b)
        return bias_act(F.linear(x, w), b, self.activation)

    def extra_repr(self):
        out_f, in_f = self.weight.shape
        return f"{in_f}->{out_f}, activation={self.activation}, weight_gain={self.weight_gain:.4g}"


class EqualConv2d(nn.Module):
    """Conv layer with equalized learning rate; optional 2x FIR downsampling (discriminator)."""

    unfused_reference = False  # see set_unfused_reference

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", down=1, lr_mul=1.0):
        super().__init__()
        self.activation = check_activation(activation)
        self.down = down
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]) / lr_mul)
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_channels * kernel_size**2)
        self.bias_gain = lr_mul
        # A constant, not state: non-persistent keeps it out of checkpoints.
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x):
        x = conv2d_resample(x, self.weight * self.weight_gain, self.resample_filter, down=self.down,
                            pointwise_at_full_resolution=self.unfused_reference)
        b = self.bias * self.bias_gain if self.bias is not None else None
        return bias_act(x, b, self.activation)

    def extra_repr(self):
        o, i, k, _ = self.weight.shape
        return f"{i}->{o}, k={k}, down={self.down}, activation={self.activation}"


# ------------------------------------------------------------------ synthesis layers


class ModulatedConv2d(nn.Module):
    """StyleGAN2's weight (de)modulation. A style s (an affine map of w, initialised to 1) scales the
    weight per input channel; demodulation rescales each sample's output channel so that the
    modulated weight has unit norm, i.e. unit-variance inputs give unit-variance outputs.

    Implemented by scaling the activations instead of the weights: conv(x * s, W) * d equals
    conv(x, W * s * d) per sample, but runs as one ordinary batched conv with a shared weight
    (no grouped conv with N different weights), which is faster on CPU and cuDNN alike."""

    def __init__(self, in_channels, out_channels, kernel_size, w_dim, demodulate=True, up=1):
        super().__init__()
        self.demodulate = demodulate
        self.up = up
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x, w, noise=None):
        """noise: None, or a tensor that broadcasts to the output (the synthesis layer's scaled noise), added
        after demodulation."""
        styles = self.affine(w)  # [N, in]
        weight = self.weight * self.weight_gain  # [out, in, k, k]
        x = x * styles[:, :, None, None]
        x = conv2d_resample(x, weight, self.resample_filter, up=self.up)
        if not self.demodulate:
            return x if noise is None else x + noise
        # ||W * s||^2 over (in, k, k) for every (sample, out): (s^2) @ (sum_k W^2)^T.
        dcoefs = (styles.square() @ weight.square().sum([2, 3]).t() + 1e-8).rsqrt()  # [N, out]
        dcoefs = dcoefs[:, :, None, None]
        if noise is None:
            return x * dcoefs
        # One pass over the full-resolution output instead of two (scale, then add) in the forward, as
        # StyleGAN2-ADA's fma (its backward is no cheaper than the two ops', as measured on a CPU).
        return torch.addcmul(noise, x, dcoefs)


NOISE_MODES = ("random", "const", "none")


def check_noise_mode(noise_mode: str) -> str:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode={noise_mode!r} is not one of {NOISE_MODES}.")
    return noise_mode


class SynthesisLayer(nn.Module):
    """Modulated conv + per-pixel noise (learned strength) + bias + lrelu."""

    unfused_reference = False  # see set_unfused_reference

    def __init__(self, in_channels, out_channels, w_dim, resolution, up=1):
        super().__init__()
        self.resolution = resolution
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, demodulate=True, up=up)
        self.noise_strength = nn.Parameter(torch.zeros([1]))  # shape [1], not [], for DeepSpeed
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        # Fixed noise for noise_mode="const" (reproducible images); saved with the model.
        self.register_buffer("noise_const", torch.randn([1, 1, resolution, resolution]))

    def forward(self, x, w, noise_mode="random", generator=None):
        noise = self.scaled_noise(x, noise_mode, generator)
        if self.unfused_reference:
            x = self.conv(x, w)
            x = x if noise is None else x + noise
        else:
            x = self.conv(x, w, noise=noise)
        return bias_act(x, self.bias, "lrelu")

    def scaled_noise(self, x, noise_mode, generator):
        """The noise times its learned strength, [N or 1, 1, R, R]; None for noise_mode="none"."""
        if noise_mode == "random":
            noise = torch.randn(
                [x.shape[0], 1, self.resolution, self.resolution],
                generator=generator, device=x.device, dtype=x.dtype,
            )
            return noise * self.noise_strength
        if noise_mode == "const":
            return self.noise_const.to(x.dtype) * self.noise_strength
        return None


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation: the image's scale is free to follow the data."""

    def __init__(self, in_channels, img_channels, w_dim):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, img_channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros([img_channels]))

    def forward(self, x, w):
        return bias_act(self.conv(x, w), self.bias, "linear")


def set_unfused_reference(module: nn.Module, enabled: bool = True) -> nn.Module:
    """For benchmarks and tests only: run `module`'s 1x1 downsampling convs and synthesis layers in their
    earlier order (the 1x1 conv strided over the full-resolution filtered map; demodulation and noise as two
    passes), the same outputs within fp32 rounding, so that the faster order can be measured against it in
    one process. A plain attribute, neither parameter nor buffer: checkpoints are the same either way."""
    for m in module.modules():
        if isinstance(m, (EqualConv2d, SynthesisLayer)):
            m.unfused_reference = enabled
    return module


# ------------------------------------------------------------------ discriminator layers


class MinibatchStd(nn.Module):
    """Append the standard deviation of features across small groups of the batch as extra channels,
    which lets D notice a generator that produces too little variety.

    The group is the largest divisor of the batch not above `group_size` (StyleGAN2 instead requires
    the batch to be divisible), so any micro-batch size works."""

    def __init__(self, group_size=4, num_channels=1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        g = max(d for d in range(1, min(self.group_size, n) + 1) if n % d == 0)
        f = self.num_channels
        # Sample i belongs to group i % (n // g); stats are per group and per channel slice.
        y = x.reshape(g, n // g, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # std over the group  [n/g, f, c/f, h, w]
        y = y.mean(dim=[2, 3, 4])  # [n/g, f]
        y = y.reshape(n // g, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def extra_repr(self):
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class ConditionMapping(nn.Module):
    """c -> [N, cmap_dim]: a small MLP (leaky ReLU between layers, linear last) on the second-moment-normalised
    text embedding (a CLIP embedding has unit L2 norm, i.e. tiny entries, which this brings to unit scale).
    D's projection embeds c with it, and G's c embedding when model.c_embed_layers is set."""

    def __init__(self, c_dim, cmap_dim, num_layers=2):
        super().__init__()
        dims = [c_dim] + [cmap_dim] * num_layers
        self.layers = nn.ModuleList(
            EqualLinear(dims[i], dims[i + 1], activation="lrelu" if i < num_layers - 1 else "linear")
            for i in range(num_layers)
        )

    def forward(self, c):
        x = normalize_2nd_moment(c)
        for layer in self.layers:
            x = layer(x)
        return x
