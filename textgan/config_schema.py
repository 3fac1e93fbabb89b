"""The training configuration's typed sections (the schema OmegaConf merges YAML recipes and overrides onto).

Every key's default and meaning lives here, one comment each; textgan.config loads, overrides and validates
(CHOICES and RANGES there hold each key's allowed values).
"""

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from textgan.config_metrics import MetricsConfig


@dataclass
class DataConfig:
    shards: str = MISSING  # directory with manifest.json
    # When `shards` has no manifest and this is > 0, build that many captioned-shapes samples
    # there first (the demo's "just works" path). COCO shards are never built implicitly.
    build_shapes_if_missing: int = 0
    resolution: int = MISSING  # must equal the shards' resolution
    num_workers: int = 2
    max_skip_rate: Optional[float] = 0.01  # fail the run when more samples than this are corrupt
    # Held-out shards (a directory with manifest.json, like `shards`): each tick reports D's loss on
    # their first `val_images` images (Loss/D/val_real) and on the first `val_images` of `shards`
    # (Loss/D/train_real); a growing gap means D memorizes its training set (textgan/train/val_real.py).
    val_shards: Optional[str] = None
    # A fixed set, the same images every tick: the curve then moves only because D changes, so ticks
    # compare, and a resumed run rebuilds exactly the sets of the uninterrupted one.
    val_images: int = 256


@dataclass
class ModelConfig:
    arch: str = "stylegan2"  # stylegan2 | cgan
    size: float = 1.0  # channel multiplier (the research runs: 0.5, 0.8, 1.0)
    channel_base: int = 16384
    channel_max: int = 512
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mbstd_group_size: int = 4
    # normalise c over the training captions before G and D embed it (textgan.nets.condition_norm):
    # none | center | whiten; the statistics are fitted at the start of a new run and saved with the weights
    c_norm: str = "none"
    mapping_lr_mul: float = 0.01  # StyleGAN's learning-rate multiplier of the mapping network
    # an MLP of this many layers (width w_dim, full learning rate) embeds c in G before c meets z. 0: cgan feeds c
    # to its first convolution directly (DCGAN), stylegan2 embeds it with one linear layer (StyleGAN2-ADA)
    c_embed_layers: int = 0
    # cgan: c also sets the gain and bias of every batch norm of G (conditional batch norm), so that the text
    # reaches every resolution. Like mapping_* for the cgan, stylegan2 ignores it: w already conditions every layer
    cgan_conditional_bn: bool = False
    # stylegan2: G's synthesis and D compute in the channels_last (NHWC) layout, the same values within fp32
    # rounding; false: the default NCHW layout. What it buys is in BENCHMARKS.md (networks); the cgan ignores it
    channels_last: bool = True


@dataclass
class TextEncoderConfig:
    model: str = "ViT-B-32"  # open_clip model name
    pretrained: Optional[str] = None  # tag (e.g. openai) or local weights file
    random_weights: bool = False  # only the tiny demo: embeddings carry no meaning, warned loudly


@dataclass
class LossConfig:
    kind: str = "nonsaturating"  # nonsaturating | hinge | rpgan (relativistic pairs, R3GAN)
    r1_gamma: float = 10.0
    # R2: the R1 penalty on fakes, in the same lazy Dreg phase. null: r1_gamma with kind=rpgan (R3GAN uses
    # equal gammas), 0 with the other kinds (StyleGAN2 penalizes reals only).
    r2_gamma: Optional[float] = None
    pl_weight: float = 2.0  # 0 disables path-length regularization
    pl_decay: float = 0.01
    # Greg runs G on batch_gpu // pl_batch_shrink samples (at least 1), as StyleGAN2 does: a lazy regularizer
    # whose target, the running mean of the lengths, averages over many steps anyway, so half the samples per
    # step lose little, while the phase's double backward through G costs about half as much. 1: all of them.
    pl_batch_shrink: int = 2
    style_mixing_prob: float = 0.9
    matching_aware: float = 0.0  # weight of "real image + mismatched caption counts as fake"
    # which wrong caption: roll (another sample's, GAN-CLS) | nearest (the batch's most similar other caption)
    matching_negatives: str = "roll"
    ortho_reg: float = 0.0  # BigGAN orthogonal regularization of G's weights
    weight_decay: float = 0.0  # L2 on both networks' weights
    grad_clip: Optional[float] = None  # max global grad norm per engine


@dataclass
class ContrastiveConfig:
    """The contrastive losses (textgan.losses.contrastive_terms). Each term's weight follows the
    research's scheme: w_s^it = S_s C_it, w_s^it' = S_s C_it h, w_s^ii = S_s C_ii, w_s^ii' = S_s C_ii h
    for the structures s in {D, clip, perceptual} (perceptual: image-image only).
    C_it = C_ii = 0 (the default) is exactly the base model and computes nothing extra."""

    C_it: float = 0.0  # image-text parameter (tuning range 0.5-5)
    C_ii: float = 0.0  # image-image parameter (tuning range 0.5-5)
    h: float = 0.0  # heterologous parameter (tuning range 0.1-2); 0: homologous pairs only
    S_D: float = 1.0  # structure weights, default ratio D : CLIP : ResNet/VGG = 1 : 2 : 1
    S_clip: float = 2.0
    S_perceptual: float = 1.0
    symmetric: bool = True  # InfoNCE both ways (averaged) or image->text / generated->real only
    positives: str = "pair"  # pair: only the exact pair | image: every caption of the same image
    temperature: float = 0.1  # logits = cosine similarity / temperature
    learnable_temperature: bool = False  # learned with D's heads (the D structure)
    gather: bool = True  # negatives from the global batch (all ranks), not just this rank's
    head_dim: int = 256  # D's projection heads
    text_noise: float = 0.0  # Gaussian noise on G's text embedding (relative to its norm)
    perceptual: Optional[str] = None  # resnet18 | resnet50 | vgg16: the ResNet/VGG structure's net
    perceptual_weights: Optional[str] = None  # local torchvision state-dict file
    perceptual_random_weights: bool = False  # tests and the tiny demo only: features carry no meaning
    # the short side images are resized to before the perceptual net: 224 is ImageNet's scale; 112 costs about a
    # quarter. Part of the features' identity: shards' precomputed features must be made at the same size.
    perceptual_size: int = 224
    precomputed: str = "auto"  # real-image features from the shards: auto | require | never


@dataclass
class AugmentConfig:
    kind: str = "none"  # none | ada | diffaugment
    ada_target: float = 0.6
    ada_kimg: float = 500.0  # how fast p can move: 0 -> 1 in this many kimg
    ada_interval: int = 4  # adjust p every this many D steps
    diffaugment: str = "color,translation,cutout"


@dataclass
class OptimConfig:
    G_lr: float = 0.0025
    D_lr: float = 0.0025
    betas: List[float] = field(default_factory=lambda: [0.0, 0.99])
    eps: float = 1e-8
    lr_schedule: str = "constant"  # constant | warmup | cosine
    lr_scaling: str = "none"  # none | linear | sqrt: how G_lr / D_lr follow the global batch (textgan.scaling)
    warmup_kimg: float = 0.0


@dataclass
class ScheduleConfig:
    total_kimg: float = 25000.0
    kimg_per_tick: float = 4.0
    batch_size: int = 32  # global: batch_gpu x world x accumulation
    batch_gpu: int = 4  # per rank, per micro-step
    batch_scaling: str = "global"  # global: batch_size fixed | per_rank: batch_gpu fixed (textgan.scaling)
    ref_batch_size: Optional[int] = None  # the batch ema_kimg and the lrs are given at; null: batch_size
    G_reg_interval: int = 4  # lazy path-length regularization (0 disables the phase)
    D_reg_interval: int = 16  # lazy R1
    ema_kimg: float = 10.0
    ema_rampup: Optional[float] = 0.05
    image_snapshot_ticks: int = 50
    network_snapshot_ticks: int = 50
    keep_checkpoints: int = 3
    max_nonfinite_steps: int = 10  # stop after this many non-finite steps in a row
    max_requeues: int = 10  # how often a preempted / timed-out Slurm job may requeue itself (submit.py --max-requeues)


@dataclass
class DistConfig:
    zero_stage_G: int = 2
    zero_stage_D: int = 2
    precision: str = "fp32"  # fp32 | bf16 | fp16
    backend: Optional[str] = None  # None: nccl on GPU, gloo on CPU
    # torch threads per rank; None: this node's cores / ranks on it (>= 1). torch's default (all
    # cores in every process) oversubscribes a CPU node with several ranks. Loader workers are not
    # subtracted: measured on 2 idle cores, 1 rank + 1 worker runs 1.6x faster with 2 threads than 1.
    num_threads: Optional[int] = None


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)  # textgan/config_metrics.py; none by default
    seed: int = 0
    desc: str = ""  # run directory suffix; default: the config file's stem
