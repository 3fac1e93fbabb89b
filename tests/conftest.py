"""Shared test setup: everything offline, small and on the CPU."""

import os

# Nothing may reach a model hub from the tests; fail fast instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The real Slurm cluster fixture (tests/slurm_util.py), available to every test module.
from slurm_util import slurm_cluster  # noqa: E402, F401
