"""Runtime: who am I, found from torchrun, the deepspeed launcher, srun, submitit's local executor or
nothing; the environment DeepSpeed needs; per-rank seeding. The last tests start real processes:
a plain `python` (a world of one) and two srun-style ranks that have nothing but SLURM_* variables."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from textgan.runtime import Runtime, first_host, slurm_port

CPU = torch.device("cpu")


def detect(env, argv=("train.py",)):
    return Runtime.from_env(device="cpu", env=dict(env), argv=list(argv))


def test_torchrun_environment():
    rt = detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                 "TORCHELASTIC_RUN_ID": "x", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"})
    assert (rt.rank, rt.world_size, rt.local_rank, rt.local_world_size, rt.launcher) == (3, 4, 1, 2, "torchrun")
    assert rt.device == CPU and not rt.is_main
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"}
    assert rt.export_env(env) == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1",
                                  "MASTER_PORT": "29500"}  # the launcher's rendezvous is kept


def test_deepspeed_launcher_passes_the_local_rank_on_the_command_line():
    rt = detect({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1234"},
                argv=["train.py", "--local_rank=1", "--config", "x.yaml"])
    assert (rt.rank, rt.local_rank, rt.launcher) == (1, 1, "deepspeed")
    assert detect({"RANK": "0", "WORLD_SIZE": "1"}, argv=["t.py", "--local_rank", "0"]).local_rank == 0
    with pytest.raises(RuntimeError, match="RANK / WORLD_SIZE are not set"):
        detect({}, argv=["train.py", "--local_rank=0"])


def test_srun_environment_finds_rank_world_and_rendezvous():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1",
           "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242"}
    rt = detect(env)
    assert (rt.rank, rt.world_size, rt.local_rank, rt.local_world_size, rt.launcher) == (3, 4, 1, 2, "slurm")
    assert rt.master_addr == "gpu07"  # first node of the allocation
    assert rt.master_port == slurm_port(env) and 20000 <= rt.master_port <= 60000
    assert detect(dict(env, SLURM_PROCID="0")).master_port == rt.master_port  # every rank agrees
    exported = rt.export_env({})
    assert exported == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu07",
                        "MASTER_PORT": str(rt.master_port)}
    # a rendezvous exported by someone else (submitit) wins over the derived one
    assert detect(dict(env, MASTER_ADDR="head", MASTER_PORT="1")).export_env(
        {"MASTER_ADDR": "head", "MASTER_PORT": "1"})["MASTER_ADDR"] == "head"


def test_first_host_of_a_slurm_node_list():
    assert first_host("gpu[07-08],cpu1") == "gpu07"  # zero padding kept
    assert first_host("node1,node2") == "node1"
    assert first_host("a[3,5-6],b[1-2]") == "a3"  # the comma inside brackets does not split
    assert first_host("rack[1-2]-n[04-05]") == "rack1-n04"
    assert first_host("localhost") == "localhost"


def test_srun_step_task_count_wins_over_the_jobs():
    rt = detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_NODELIST": "a"})
    assert rt.world_size == 2


def test_submitit_local_executor_environment():
    rt = detect({"SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_LOCALID": "1",
                 "SUBMITIT_LOCAL_JOB_ID": "777"})
    assert (rt.rank, rt.world_size, rt.local_rank, rt.launcher) == (1, 2, 1, "submitit-local")
    assert rt.export_env({})["MASTER_ADDR"] == "127.0.0.1"


def test_nothing_means_a_world_of_one_with_a_free_port():
    rt = detect({})
    assert (rt.rank, rt.world_size, rt.local_rank, rt.launcher, rt.is_main) == (0, 1, 0, "none", True)
    env = {}
    exported = rt.export_env(env)
    assert exported["RANK"] == "0" and exported["WORLD_SIZE"] == "1" and exported["MASTER_ADDR"] == "127.0.0.1"
    assert 0 < int(exported["MASTER_PORT"]) < 65536 and env["LOCAL_RANK"] == "0"


def test_bad_environments_fail_with_the_variable_named():
    with pytest.raises(RuntimeError, match="RANK='x' is not an integer"):
        detect({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(RuntimeError, match="rank 2 is outside world size 2"):
        detect({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(RuntimeError, match="MASTER_PORT is not set"):
        detect({"RANK": "0", "WORLD_SIZE": "2"}).export_env({})


def test_seed_everything_differs_per_rank_and_repeats():
    def draws(rank):
        Runtime(rank, rank, 2, 2, CPU, "none").seed_everything(7)
        import random

        import numpy as np

        return random.random(), float(np.random.rand()), float(torch.rand([]))

    assert draws(0) == draws(0)
    assert all(a != b for a, b in zip(draws(0), draws(1)))


def test_collectives_without_a_process_group_are_identities():
    rt = Runtime(0, 0, 1, 1, CPU, "none")
    x = torch.tensor([1.0, 3.0])
    mean = rt.all_reduce_mean(x)
    assert torch.equal(mean, x) and mean is not x
    assert rt.all_gather_object({"a": 1}) == [{"a": 1}]
    rt.barrier()


# ---------------------------------------------------------------------- real processes

WORKER = textwrap.dedent("""
    import os, torch, torch.distributed as dist
    from textgan.runtime import Runtime
    rt = Runtime.from_env()
    rt.init_distributed()
    total = rt.all_reduce_mean(torch.tensor([float(rt.rank)]))
    line = f"{rt.launcher} {rt.rank} {rt.world_size} {dist.get_backend()} {float(total)}"
    if os.environ.get("RESULT_DIR"):  # ranks sharing one stdout (torchrun) would interleave
        open(os.path.join(os.environ["RESULT_DIR"], f"rank{rt.rank}.txt"), "w").write(line)
    else:
        print(line, flush=True)
    rt.shutdown()
""")


def _clean_env(**extra):
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("SLURM_", "SUBMITIT_"))}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", **extra)
    return env


@pytest.mark.multiproc
def test_one_plain_process_is_a_world_of_one():
    out = subprocess.run([sys.executable, "-c", WORKER], env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["none", "0", "1", "gloo", "0.0"]


@pytest.mark.multiproc
def test_two_srun_style_ranks_meet_without_any_torch_variables():
    job = dict(SLURM_NTASKS="2", SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST="localhost", SLURM_JOB_ID="31337")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_clean_env(SLURM_PROCID=str(r), SLURM_LOCALID=str(r), **job)) for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-3000:]
    assert sorted(stdout.split()[1] for stdout, _ in outs) == ["0", "1"]
    for stdout, _ in outs:
        launcher, _, world, backend, mean = stdout.split()
        assert (launcher, world, backend, float(mean)) == ("slurm", "2", "gloo", 0.5)  # mean of ranks 0 and 1


@pytest.mark.multiproc
def test_two_ranks_under_torchrun(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                         env=_clean_env(RESULT_DIR=str(tmp_path)), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [(tmp_path / f"rank{r}.txt").read_text().split() for r in range(2)]
    assert lines == [["torchrun", "0", "2", "gloo", "0.5"], ["torchrun", "1", "2", "gloo", "0.5"]]
