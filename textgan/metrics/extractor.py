"""torch-fidelity feature extractors for FID / KID / IS, loaded offline, with an identity that pins them.

The default is torch-fidelity's InceptionV3 ("inception-v3-compat", TF-ported weights, the FID everyone
reports). Its weights never download here: they come from MetricsConfig.feature_extractor_weights or,
when that is unset, from torch's hub cache where torch-fidelity itself would have put them. Any
extractor registered with torch_fidelity.register_feature_extractor works too (the tests use a tiny one).

Safety: torch-fidelity opens a weights file with torch.load(weights_only=False), i.e. full pickle,
which runs whatever code the file carries. `check_weights_file` therefore vets the file first: its
sha256 must match every digest that is known for it (metrics.feature_extractor_sha256, and the
sha256 prefix torch hub puts in the names of the files it downloads), and unless a full sha256 was
configured it must load with torch.load(weights_only=True), i.e. hold only tensors and containers.
A name's prefix can only refuse a file, never vouch for one (8 hex digits are cheap to forge); only
a full configured sha256 lets through a file that is more than tensors (e.g. a TorchScript archive).

Identity = name + feature layers + sha256 of the weights file (when there is one) + sha256 of the
instantiated network's tensors. The latter catches what a file hash cannot (a registered extractor
whose code or seed changed), so cached real statistics are keyed by what actually computes them.
"""

import hashlib
import os
import re

import numpy as np
import torch

from textgan.errors import UsageError
from textgan.files import sha256_file
from textgan.config_metrics import INCEPTION


def default_inception_weights() -> str:
    """Where torch-fidelity caches its InceptionV3 weights: $TORCH_HOME/hub/checkpoints/<file>."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(URL_INCEPTION_V3))


def _weights_path(name: str, weights, cls) -> str | None:
    if weights is not None:
        weights = os.path.abspath(os.path.expanduser(os.fspath(weights)))
        if not os.path.isfile(weights):
            raise UsageError(f"feature extractor weights file {weights} does not exist; "
                             f"give the local weights file of {name!r} (metrics.feature_extractor_weights)")
        return weights
    if name == INCEPTION:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        path = default_inception_weights()
        if not os.path.isfile(path):
            raise UsageError(
                f"the InceptionV3 weights for FID/KID/IS are not on this machine, and textgan never downloads at "
                f"run time. On a machine with internet, fetch {URL_INCEPTION_V3} and copy it to {path} "
                f"(torch's hub cache, $TORCH_HOME/hub/checkpoints), or set metrics.feature_extractor_weights "
                f"(textgan eval: --feature-extractor-weights) to the file's path.")
        return path
    if cls.__module__.startswith("torch_fidelity."):
        # torch-fidelity's other built-ins (clip-*, dinov2-*, vgg16) would download their weights.
        raise UsageError(f"feature extractor {name!r} downloads its weights unless given a local file: set "
                         "metrics.feature_extractor_weights to the file's path")
    return None  # a registered extractor that brings its own weights


# torch hub names the files it downloads <name>-<first hex digits of the sha256>.<ext>
# (weights-inception-2015-12-05-6726825d.pth) and checks that prefix; so do we.
_HUB_HASH_PREFIX = re.compile(r"-([0-9a-f]{8,64})\.")


def check_weights_file(path: str, sha256=None) -> str:
    """The file's sha256, after refusing (UsageError) a file that could run code when torch-fidelity
    unpickles it: a digest that differs from `sha256` or from the hub-style prefix in the file name,
    or (without `sha256`) content that torch.load(weights_only=True) rejects. Nothing of the file is
    unpickled except by that restricted loader, which builds only tensors and plain containers."""
    digest = sha256_file(path)
    refetch = ("fetch the weights again from their official source (or point metrics.feature_extractor_weights "
               "at a trusted copy)")
    if sha256 is not None and digest != sha256.lower():
        raise UsageError(f"feature extractor weights {path} have sha256 {digest}, but metrics.feature_extractor_sha256 "
                         f"is {sha256}: refusing to load a modified or wrong file; {refetch}.")
    named = _HUB_HASH_PREFIX.search(os.path.basename(path))
    if named and not digest.startswith(named.group(1)):
        raise UsageError(f"feature extractor weights {path}: the file name says sha256 {named.group(1)}..., the file "
                         f"has {digest}: refusing to load a corrupt or replaced file; {refetch}.")
    if sha256 is None:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UsageError(
                f"feature extractor weights {path} hold more than tensors (torch.load(weights_only=True) refused "
                f"them: {reason}); torch-fidelity would unpickle them in full, which can run code, so textgan does "
                f"not load them. If you trust this exact file, set metrics.feature_extractor_sha256 to {digest}; "
                f"otherwise {refetch}.") from None
    return digest


def state_sha256(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(np.ascontiguousarray(tensor.detach().cpu().float().numpy()).tobytes())
    return digest.hexdigest()


class Extractor:
    """A frozen torch-fidelity extractor: uint8 [B, 3, H, W] -> {layer: float32 numpy [B, D]}."""

    def __init__(self, name: str, weights=None, kinds=("fid", "kid", "isc"), device="cpu", weights_sha256=None):
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
        from torch_fidelity.utils import create_feature_extractor

        if name not in FEATURE_EXTRACTORS_REGISTRY:
            raise UsageError(f"unknown feature extractor {name!r}; torch-fidelity knows "
                             f"{', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))} (others: register them with "
                             "torch_fidelity.register_feature_extractor before the metrics run)")
        cls = FEATURE_EXTRACTORS_REGISTRY[name]
        self.layers = {kind: cls.get_default_feature_layer_for_metric(kind) for kind in kinds}
        layer_list = list(dict.fromkeys(self.layers.values()))
        path = _weights_path(name, weights, cls)
        digest = check_weights_file(path, weights_sha256) if path else None
        self.device = torch.device(device)
        try:
            self.net = create_feature_extractor(name, layer_list, cuda=False, verbose=False,
                                                feature_extractor_weights_path=path)
        except Exception as e:
            raise UsageError(f"could not load feature extractor {name!r} from {path}: {e}") from e
        self.net = self.net.to(self.device)
        self.name = name
        self.identity = {
            "name": name,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "layers": dict(sorted(self.layers.items())),
            "weights": path,
            "weights_sha256": digest,
            "state_sha256": state_sha256(self.net),
        }

    @torch.no_grad()
    def features(self, images_uint8) -> dict:
        images = torch.as_tensor(images_uint8)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"feature extractor input must be uint8 [B, 3, H, W], got {images.dtype} "
                             f"{tuple(images.shape)}")
        out = self.net.convert_features_tuple_to_dict(self.net(images.to(self.device)))
        return {layer: value.float().cpu().numpy() for layer, value in out.items()}
