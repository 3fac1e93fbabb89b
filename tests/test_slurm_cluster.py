"""The Slurm test cluster itself (tests/slurm/cluster.sh): nodes, submitit jobs, a 2-node gloo job,
cancellation as sacct reports it, and an idempotent start. These run for real (marked `slurm`)."""

import os
import socket
import subprocess
import time

import pytest

from slurm_util import CLUSTER_SH, STATE_DIR, SlurmCluster

pytestmark = pytest.mark.slurm


# ---------------------------------------------------------------- what the jobs run (module level:
# the job unpickles them by reference; the executor puts tests/ on the job's PYTHONPATH)


def where_am_i(a, b):
    return a + b, os.environ["SLURMD_NODENAME"], socket.gethostname()


def all_reduce_over_ranks():
    import submitit
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    env = submitit.helpers.TorchDistributedEnvironment().export()  # MASTER_ADDR = first node's name
    dist.init_process_group("gloo", rank=env.rank, world_size=env.world_size, timeout=_timedelta(120))
    try:
        value = torch.tensor([float(env.rank + 1)])
        dist.all_reduce(value)
    finally:
        dist.destroy_process_group()
    return dict(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank, sum=value.item(),
                master_addr=env.master_addr, node=os.environ["SLURMD_NODENAME"], hostname=socket.gethostname())


def _timedelta(seconds):
    import datetime

    return datetime.timedelta(seconds=seconds)


def sleep_long():
    time.sleep(600)


# ---------------------------------------------------------------- tests


def _node_rows(cluster: SlurmCluster):
    out = subprocess.run(["sinfo", "-h", "-N", "-p", cluster.partition, "-o", "%N %t %c"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(tuple(line.split()) for line in out.splitlines() if line.strip())


@pytest.mark.timeout(120)
def test_sinfo_shows_four_idle_nodes(slurm_cluster):
    # Jobs of earlier tests may still be completing: give the nodes a moment to become idle.
    deadline = time.time() + 60
    while time.time() < deadline and any(state != "idle" for _, state, _ in _node_rows(slurm_cluster)):
        time.sleep(1)
    assert _node_rows(slurm_cluster) == [(f"node{i}", "idle", "4") for i in range(1, 5)]
    assert slurm_cluster.partition == "debug" and slurm_cluster.cpus_per_node == 4


@pytest.mark.timeout(180)
def test_submitit_job_returns_its_value_and_sacct_reports_completed(slurm_cluster, tmp_path):
    job = slurm_cluster.executor(tmp_path / "jobs", timeout_min=3).submit(where_am_i, 2, 3)
    with slurm_cluster.logs_on_failure():
        total, node, hostname = job.result()
        assert total == 5
        assert node in slurm_cluster.nodes
        if slurm_cluster.mode == "netns":  # each node is its own host
            assert hostname == node
        assert slurm_cluster.wait_for_state(job.job_id, "COMPLETED", timeout=60) == "COMPLETED"


@pytest.mark.timeout(300)
def test_two_nodes_two_tasks_gloo_all_reduce(slurm_cluster, tmp_path):
    executor = slurm_cluster.executor(tmp_path / "jobs", nodes=2, tasks_per_node=2, cpus_per_task=1,
                                      timeout_min=5)
    job = executor.submit(all_reduce_over_ranks)
    with slurm_cluster.logs_on_failure():
        results = sorted(job.results(), key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1, 2, 3]
    assert {r["world_size"] for r in results} == {4}
    assert [r["sum"] for r in results] == [10.0] * 4  # 1 + 2 + 3 + 4 on every rank
    nodes = sorted({r["node"] for r in results})
    assert len(nodes) == 2
    assert sorted(r["node"] for r in results) == [nodes[0], nodes[0], nodes[1], nodes[1]]  # 2 per node
    assert sorted(r["local_rank"] for r in results) == [0, 0, 1, 1]
    assert {r["master_addr"] for r in results} == {nodes[0]}  # the first node, by name
    if slurm_cluster.mode == "netns":  # really two hosts talking over the bridge
        assert sorted({r["hostname"] for r in results}) == nodes


@pytest.mark.timeout(180)
def test_cancelled_job_is_reported_cancelled_by_sacct(slurm_cluster, tmp_path):
    job = slurm_cluster.executor(tmp_path / "jobs", timeout_min=5).submit(sleep_long)
    with slurm_cluster.logs_on_failure():
        assert slurm_cluster.wait_for_state(job.job_id, "RUNNING", timeout=60) == "RUNNING"
        job.cancel(check=True)
        assert slurm_cluster.wait_for_state(job.job_id, "CANCELLED", timeout=60) == "CANCELLED"


@pytest.mark.timeout(180)
def test_start_again_is_a_no_op(slurm_cluster):
    if slurm_cluster.mode == "external":
        pytest.skip("the running cluster is not ours (tests/slurm/cluster.sh did not start it)")
    pidfile = STATE_DIR / "run" / "slurmctld.pid"
    before = pidfile.read_text()
    proc = subprocess.run(["bash", str(CLUSTER_SH), "start"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "already running" in proc.stdout
    assert pidfile.read_text() == before  # the same controller, not a restarted one
    assert [row[0] for row in _node_rows(slurm_cluster)] == [f"node{i}" for i in range(1, 5)]
