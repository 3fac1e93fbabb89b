"""Feature-extractor weights are vetted before torch-fidelity unpickles them (it uses weights_only=False).

The malicious file is a real torch.save pickle whose unpickling creates a directory; the tests hand it
to torch-fidelity's own InceptionV3 path (configured file, and the hub-cache default), check it is
refused with the file named and that nothing ran, then prove in a subprocess that the file is live.
Nothing is downloaded: InceptionV3 is never constructed, and the good-weights cases use the tiny
registered extractor of tests/metrics_fixture.py."""

import os
import subprocess
import sys

import pytest
import torch
from metrics_fixture import metrics_config, register_tiny_extractor, tiny_extractor_weights

from textgan.errors import UsageError
from textgan.files import sha256_file
from textgan.metrics import validate_metrics_config
from textgan.metrics.extractor import Extractor, default_inception_weights


class _Payload:
    """Unpickling this calls os.mkdir(marker): stands in for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _malicious(path, marker) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"conv.weight": torch.zeros(1), "payload": _Payload(str(marker))}, path)
    return str(path)


def _assert_live(path, marker):
    """The refused file really runs code under a plain torch.load (what torch-fidelity does)."""
    assert not os.path.exists(marker)
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                   check=True, capture_output=True, timeout=120)
    assert os.path.isdir(marker)


def test_a_pickle_that_runs_code_is_refused_before_torch_fidelity_loads_it(tmp_path):
    marker = tmp_path / "PWNED"
    evil = _malicious(tmp_path / "inception.pth", marker)
    with pytest.raises(UsageError) as refused:
        Extractor("inception-v3-compat", weights=evil)
    assert not os.path.exists(marker)  # nothing was executed
    message = str(refused.value)
    assert evil in message and "more than tensors" in message and "feature_extractor_sha256" in message
    _assert_live(evil, marker)


def test_a_planted_hub_cache_file_is_refused_by_its_name_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    marker = tmp_path / "PWNED"
    planted = _malicious(default_inception_weights(), marker)  # .../weights-inception-2015-12-05-6726825d.pth
    with pytest.raises(UsageError) as refused:
        Extractor("inception-v3-compat")
    assert not os.path.exists(marker)  # nothing was executed
    assert "the file name says sha256 6726825d..." in str(refused.value)
    assert planted in str(refused.value) and sha256_file(planted) in str(refused.value)
    _assert_live(planted, marker)


def test_tensor_weights_must_match_every_known_digest(tmp_path):
    name = register_tiny_extractor()
    weights = tiny_extractor_weights(tmp_path / "tiny.pth", seed=3)
    digest = sha256_file(weights)
    # plain tensors, no digest known: accepted, and the recorded digest is the file's
    assert Extractor(name, weights=weights).identity["weights_sha256"] == digest
    assert Extractor(name, weights=weights, weights_sha256=digest.upper()).identity["weights_sha256"] == digest
    with pytest.raises(UsageError, match="metrics.feature_extractor_sha256 is 0{64}") as refused:
        Extractor(name, weights=weights, weights_sha256="0" * 64)
    assert weights in str(refused.value) and digest in str(refused.value)
    # a hub-style name whose digest prefix does not match the content
    renamed = tmp_path / "tiny-deadbeef.pth"
    os.rename(weights, renamed)
    with pytest.raises(UsageError, match=r"tiny-deadbeef\.pth: the file name says sha256 deadbeef"):
        Extractor(name, weights=str(renamed))
    matching = tmp_path / f"tiny-{digest[:8]}.pth"
    os.rename(renamed, matching)
    assert Extractor(name, weights=str(matching)).identity["weights_sha256"] == digest


def test_a_configured_sha256_must_be_64_hex_digits(tmp_path):
    cfg = metrics_config(tmp_path, str(tmp_path), None, [], feature_extractor_sha256="abc")
    with pytest.raises(UsageError, match=r"metrics\.feature_extractor_sha256 must be the 64 hex digits"):
        validate_metrics_config(cfg)
