"""A job whose ranks meet on this host's loopback address listens on no network interface.

A real process (no launcher variables, MASTER_ADDR=127.0.0.1 as a user would export) starts the
runtime, builds the two DeepSpeed engines on ZeRO-2 (which make process groups of their own),
trains two steps, and lists its own listening sockets; then the same with two local ranks.
Before the fix torch's TCPStore listened on `::` (every interface) for the whole run."""

import ipaddress
import json
import os
import subprocess
import sys
import textwrap

import pytest
from dist_util import run_ranks

from textgan.runtime import loopback_interface

TESTS = os.path.dirname(os.path.abspath(__file__))


def train_and_list_sockets(rank=0, world_size=1) -> dict:
    return _train_and_list_sockets()[1]


def _train_and_list_sockets() -> tuple:
    """(runtime, report): build the engines (ZeRO-2) through the Runtime, train two steps, list the
    listening sockets."""
    import math

    import deepspeed.comm as ds_comm
    import psutil
    import torch.distributed as dist
    from dist_util import floats, setup_training, tiny_cfg

    from textgan.train.step import train_step

    cfg = tiny_cfg("dist.zero_stage_G=2", "dist.zero_stage_D=2")
    setup, batches, state = setup_training(cfg)
    losses = [floats(train_step(setup, batches, state)) for _ in range(2)]
    return setup.runtime, {
        "listening": [list(c.laddr)[:2] for c in psutil.Process().net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN],
        "finite": all(math.isfinite(v) for step in losses for v in step.values()),  # each rank's own stats
        "torch_world": dist.get_world_size(),
        "deepspeed_initialized": ds_comm.is_initialized(),  # DeepSpeed adopted the group we started
        "deepspeed_world": ds_comm.get_world_size(),
        "gloo_interface": os.environ.get("GLOO_SOCKET_IFNAME"),
    }


SCRIPT = textwrap.dedent("""
    import json, os
    from test_runtime_sockets import _train_and_list_sockets
    runtime, report = _train_and_list_sockets()
    runtime.shutdown()
    report["gloo_interface_after_shutdown"] = os.environ.get("GLOO_SOCKET_IFNAME")
    print(json.dumps(report))
""")


def _is_loopback(host: str) -> bool:
    address = ipaddress.ip_address(host)
    if getattr(address, "ipv4_mapped", None) is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _assert_loopback_only(listening):
    wildcard = [addr for addr in listening if addr[0] in ("0.0.0.0", "::")]
    assert not wildcard, f"listening on every interface: {wildcard}"
    assert all(_is_loopback(host) for host, _ in listening), listening


@pytest.mark.multiproc
def test_a_world_of_one_trains_without_listening_on_any_network_interface():
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT", "GLOO_SOCKET_IFNAME")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("SLURM_", "SUBMITIT_"))}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
               PYTHONPATH=os.pathsep.join([TESTS, env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["finite"] and report["torch_world"] == 1
    assert report["deepspeed_initialized"] and report["deepspeed_world"] == 1  # DeepSpeed adopted our group
    _assert_loopback_only(report["listening"])
    # gloo was pinned to the loopback interface while the group lived, and only then
    assert report["gloo_interface"] == loopback_interface() is not None
    assert report["gloo_interface_after_shutdown"] is None


@pytest.mark.multiproc
def test_local_ranks_meeting_on_loopback_listen_only_on_loopback(tmp_path):
    ranks = run_ranks(train_and_list_sockets, tmp_path, world_size=2)  # MASTER_ADDR=127.0.0.1
    assert all(r["finite"] and r["deepspeed_initialized"] for r in ranks)
    assert [(r["torch_world"], r["deepspeed_world"]) for r in ranks] == [(2, 2), (2, 2)]
    assert ranks[0]["listening"], "rank 0 serves the store"
    for rank in ranks:
        _assert_loopback_only(rank["listening"])
