"""Who am I in the job: rank, world size, device; found from whatever started this process.

    runtime = Runtime.from_env()      # torchrun, srun / submitit, the deepspeed launcher, or nothing
    runtime.init_distributed()        # DeepSpeed is the one path: even a world of one gets a process group
    runtime.seed_everything(cfg.seed)

Launchers and what they leave in the environment:
- torchrun (and submitit's TorchDistributedEnvironment.export(), and the deepspeed launcher):
  RANK, WORLD_SIZE, LOCAL_RANK (+ LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
- srun: SLURM_PROCID, SLURM_NTASKS (SLURM_STEP_NUM_TASKS inside a step), SLURM_LOCALID,
  SLURM_JOB_NODELIST, SLURM_JOB_ID; no MASTER_ADDR unless someone exported it.
- submitit's local executor: SUBMITIT_LOCAL_GLOBALID, SUBMITIT_LOCAL_NTASKS, SUBMITIT_LOCAL_LOCALID.
- the deepspeed launcher also passes `--local_rank=N` on the command line.
- nothing: a world of one.

`deepspeed.init_distributed` needs all of RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
with one missing it falls back to MPI discovery and fails (no mpi4py). `export_env` fills them in.

Rendezvous and open ports: a world of one, and ranks meeting at a loopback MASTER_ADDR (not under
torchrun, whose agent serves the store), get their process group from `init_distributed` itself,
with nothing listening beyond the loopback interface (tests/test_runtime_sockets.py); other jobs
use DeepSpeed's env:// rendezvous, whose store listens on every interface of rank 0's node.

Only this Runtime object carries the rank: it is built once at the entry point and passed down;
library code never reads rank or world size from globals or the environment.
"""

import ipaddress
import os
import random
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

# "env": RANK / WORLD_SIZE exported by someone else (submitit's TorchDistributedEnvironment, a script).
LAUNCHERS = ("torchrun", "deepspeed", "env", "slurm", "submitit-local", "none")


@dataclass
class Runtime:
    """This process's place in the job. Build it with from_env() at the entry point; pass it down.
    Collectives below are no-ops in a world of one, so callers never branch on the world size."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    device: torch.device
    launcher: str  # one of LAUNCHERS; for logs and error messages
    master_addr: Optional[str] = None  # None: export_env picks the default for the launcher
    master_port: Optional[int] = None
    # GLOO_SOCKET_IFNAME as init_distributed set it (see _pin_gloo_to_loopback); shutdown() unsets it
    _pinned_gloo_interface: Optional[str] = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and prints."""
        return self.rank == 0

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_env(cls, device=None, env=None, argv=None) -> "Runtime":
        """Detect the launcher from `env` (default os.environ) and `argv` (default sys.argv).
        device: None -> cuda:local_rank when CUDA is available, else cpu."""
        env = os.environ if env is None else env
        argv = sys.argv if argv is None else argv
        found = _from_torch_env(env, argv) or _from_slurm_env(env) or _from_submitit_local(env)
        found = found or dict(launcher="none", rank=0, world_size=1, local_rank=0)
        found.setdefault("local_world_size", found["world_size"])
        if not 0 <= found["rank"] < found["world_size"]:
            raise RuntimeError(
                f"launcher {found['launcher']}: rank {found['rank']} is outside world size {found['world_size']}; "
                "check the RANK / WORLD_SIZE (or SLURM_PROCID / SLURM_NTASKS) environment variables"
            )
        if device is None:
            device = f"cuda:{found['local_rank']}" if torch.cuda.is_available() else "cpu"
        return cls(device=torch.device(device), **found)

    # ------------------------------------------------------------------ process group

    def export_env(self, env=None) -> dict:
        """Set RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT in `env` (default
        os.environ) without overwriting a MASTER_ADDR / MASTER_PORT the launcher chose. Returns
        the five values deepspeed.init_distributed reads."""
        env = os.environ if env is None else env
        env["RANK"], env["WORLD_SIZE"] = str(self.rank), str(self.world_size)
        env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"] = str(self.local_rank), str(self.local_world_size)
        if self.master_addr is not None:
            env["MASTER_ADDR"] = self.master_addr
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        if self.master_port is not None:
            env["MASTER_PORT"] = str(self.master_port)
        if "MASTER_PORT" not in env:
            if self.world_size > 1:
                # Every rank must agree on the port, so it cannot be drawn here at random.
                raise RuntimeError(
                    f"launcher {self.launcher} with {self.world_size} ranks: MASTER_PORT is not set; "
                    "export it (the same value on every rank) or start the job with torchrun"
                )
            env["MASTER_PORT"] = str(free_port())
        return {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}

    def init_distributed(self, backend=None) -> None:
        """Export the env, then create torch's default process group (gloo on CPU, nccl on CUDA).
        DeepSpeed adopts this group when textgan.train.engines builds the engines, so this module
        needs no deepspeed import. Idempotent: a second call is a no-op."""
        if dist.is_available() and dist.is_initialized():
            return
        self.export_env()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        backend = backend or ("nccl" if self.device.type == "cuda" else "gloo")
        if self.world_size == 1:
            self._pinned_gloo_interface = _pin_gloo_to_loopback(backend)
            _init_private_group(backend)
        elif _is_loopback(os.environ["MASTER_ADDR"]) and "TORCHELASTIC_USE_AGENT_STORE" not in os.environ:
            # (torchrun's agent already serves the store on MASTER_PORT: left to torchrun)
            self._pinned_gloo_interface = _pin_gloo_to_loopback(backend)
            _init_loopback_group(backend, self.rank, self.world_size, int(os.environ["MASTER_PORT"]))
        else:  # ranks on several hosts, or torchrun's agent store: the env:// rendezvous
            dist.init_process_group(backend, init_method="env://", rank=self.rank, world_size=self.world_size,
                                    timeout=_group_timeout())
        if dist.get_world_size() != self.world_size or dist.get_rank() != self.rank:
            raise RuntimeError(
                f"process group has rank {dist.get_rank()} of {dist.get_world_size()}, but the launcher "
                f"({self.launcher}) said {self.rank} of {self.world_size}"
            )

    def shutdown(self) -> None:
        """Wait for every rank, then tear the process group down. Call it at the end of a run: a
        gloo group left to the interpreter's exit can abort a rank ("terminate called without an
        active exception") while another is still leaving, which torchrun reports as a failure."""
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        pinned, self._pinned_gloo_interface = self._pinned_gloo_interface, None
        if pinned is not None and os.environ.get("GLOO_SOCKET_IFNAME") == pinned:
            del os.environ["GLOO_SOCKET_IFNAME"]  # jobs this process starts later may span nodes

    # ------------------------------------------------------------------ collectives (no-ops without a group)

    def _distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mean over ranks (a new tensor; the input is left alone)."""
        out = tensor.detach().clone()
        if self._distributed():
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
            out /= self.world_size
        return out

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        """Max over ranks (a new tensor), e.g. to agree on a flag that any rank may raise."""
        out = tensor.detach().clone()
        if self._distributed():
            dist.all_reduce(out, op=dist.ReduceOp.MAX)
        return out

    def all_gather_object(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank (small picklable objects only)."""
        if not self._distributed():
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_gather_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's tensor concatenated along dim 0 in rank order (same shape on every rank;
        no gradient). The contrastive losses take this as their `gather`."""
        tensor = tensor.detach().contiguous()
        if not self._distributed():
            return tensor.clone()
        out = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(out, tensor)
        return torch.cat(out)

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """In place: every rank gets rank `src`'s values."""
        if self._distributed():
            dist.broadcast(tensor, src=src)
        return tensor

    def barrier(self) -> None:
        if self._distributed():
            dist.barrier()

    # ------------------------------------------------------------------ randomness

    def seed_everything(self, seed: int) -> int:
        """Seed python, numpy and torch (CPU and CUDA) with seed + rank, so that ranks draw
        different latents and noise while the whole job stays reproducible. Returns the rank's seed."""
        rank_seed = int(seed) + self.rank
        random.seed(rank_seed)
        np.random.seed(rank_seed % 2**32)
        torch.manual_seed(rank_seed)  # also seeds every CUDA device
        return rank_seed


# The env:// rendezvous that deepspeed.init_distributed would use starts a TCPStore server, and that
# server listens on every interface (0.0.0.0 / ::) whatever MASTER_ADDR says. For a job whose ranks
# all meet on this host's loopback address that is a port open to the network for nothing, so the
# two functions below start the process group themselves; DeepSpeed then adopts it.


def _init_private_group(backend: str) -> None:
    """A world of one: an in-process HashStore, so no store socket at all."""
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def _group_timeout():
    """How long a collective may wait for the other ranks: DeepSpeed's default (10 minutes), and its
    DEEPSPEED_TIMEOUT variable (minutes) is honoured, as when DeepSpeed started the group itself."""
    return timedelta(minutes=int(os.environ.get("DEEPSPEED_TIMEOUT", 10)))


def _init_loopback_group(backend: str, rank: int, world_size: int, port: int) -> None:
    """Ranks that all meet at a loopback MASTER_ADDR: rank 0 binds the store's socket to 127.0.0.1
    itself and hands it to TCPStore (master_listen_fd), the others connect there."""
    timeout = _group_timeout()
    listen_fd = None
    if rank == 0:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("127.0.0.1", port))
        except OSError as e:
            server.close()
            raise RuntimeError(f"rank 0 cannot listen on 127.0.0.1:{port} (MASTER_PORT) for the rendezvous: {e}; "
                               "export another MASTER_PORT (the same on every rank)") from None
        server.listen(max(128, world_size))
        listen_fd = server.detach()  # the store owns (and closes) it from here
    store = dist.TCPStore("127.0.0.1", port, world_size, rank == 0, timeout=timeout, master_listen_fd=listen_fd)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


def _pin_gloo_to_loopback(backend: str) -> Optional[str]:
    """gloo opens listening sockets of its own, on the address the host name resolves to;
    GLOO_SOCKET_IFNAME pins them, and those of every group created later (DeepSpeed creates
    one), to the loopback interface, unless the user chose an interface already. It stays set
    while the group lives (processes started meanwhile inherit it); returns what it set, or None."""
    if backend != "gloo" or "GLOO_SOCKET_IFNAME" in os.environ:
        return None
    loopback = loopback_interface()
    if loopback is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = loopback
    return loopback


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything, on any node
        return False


def loopback_interface() -> Optional[str]:
    """Name of the network interface that holds 127.0.0.1 ("lo" on Linux), or None."""
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == "127.0.0.1" for a in addresses):
            return name
    return None


# ---------------------------------------------------------------------- launcher detection


def _int(env, key):
    value = env.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"environment variable {key}={value!r} is not an integer") from None


def _argv_local_rank(argv):
    """N from `--local_rank=N` / `--local_rank N` (what the deepspeed launcher appends), else None."""
    for i, arg in enumerate(argv):
        match = re.fullmatch(r"--local[_-]rank(?:=(.*))?", arg)
        if match:
            value = match.group(1) if match.group(1) is not None else (argv[i + 1] if i + 1 < len(argv) else "")
            if not value.isdigit():
                raise RuntimeError(f"command line: {arg} needs an integer value")
            return int(value)
    return None


def _from_torch_env(env, argv):
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    argv_local_rank = _argv_local_rank(argv)
    if rank is None or world is None:
        if argv_local_rank is not None:
            raise RuntimeError(
                f"--local_rank={argv_local_rank} on the command line but RANK / WORLD_SIZE are not set; "
                "start the job with the deepspeed launcher or torchrun, which export them"
            )
        return None
    local_rank = _int(env, "LOCAL_RANK")
    if "TORCHELASTIC_RUN_ID" in env:
        launcher = "torchrun"
    elif argv_local_rank is not None:
        launcher = "deepspeed"
    else:
        launcher = "env"
    if local_rank is None:
        local_rank = argv_local_rank if argv_local_rank is not None else rank
    found = dict(launcher=launcher, rank=rank, world_size=world, local_rank=local_rank)
    if _int(env, "LOCAL_WORLD_SIZE") is not None:
        found["local_world_size"] = _int(env, "LOCAL_WORLD_SIZE")
    return found


def _from_slurm_env(env):
    rank = _int(env, "SLURM_PROCID")
    # Inside a step (srun) the step's task count is the one that matters; SLURM_NTASKS is the job's.
    world = _int(env, "SLURM_STEP_NUM_TASKS") or _int(env, "SLURM_NTASKS")
    if rank is None or world is None:
        return None
    nodes = _int(env, "SLURM_STEP_NUM_NODES") or _int(env, "SLURM_JOB_NUM_NODES") or _int(env, "SLURM_NNODES") or 1
    found = dict(
        launcher="slurm",
        rank=rank,
        world_size=world,
        local_rank=_int(env, "SLURM_LOCALID") or 0,
        local_world_size=max(1, world // nodes),
    )
    if world > 1:
        if "MASTER_ADDR" not in env:
            found["master_addr"] = slurm_first_node(env)
        if "MASTER_PORT" not in env:
            found["master_port"] = slurm_port(env)
    return found


def _from_submitit_local(env):
    rank, world = _int(env, "SUBMITIT_LOCAL_GLOBALID"), _int(env, "SUBMITIT_LOCAL_NTASKS")
    if rank is None or world is None:
        return None
    found = dict(launcher="submitit-local", rank=rank, world_size=world,
                 local_rank=_int(env, "SUBMITIT_LOCAL_LOCALID") or 0)
    if world > 1 and "MASTER_PORT" not in env:
        # The local executor gives every task the same job id (the parent's pid): a shared port.
        found["master_port"] = _port_from_job_id(env.get("SUBMITIT_LOCAL_JOB_ID", "0"))
    return found


def slurm_first_node(env) -> str:
    """First host of the job's node list ("gpu[07-08],cpu1" -> "gpu07"), the rendezvous host. Asks
    `scontrol show hostnames` when Slurm's tools are on the PATH, else expands the syntax itself."""
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        return "127.0.0.1"
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return first_host(nodelist)


def first_host(nodelist: str) -> str:
    """The first name a Slurm host list expands to: the first comma-separated group (commas inside
    brackets do not separate), with every [a-b,c] range replaced by its first value (zero padding kept)."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            end = i
            break
    return re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(",")[0].split("-")[0], nodelist[:end])


def slurm_port(env) -> int:
    """A port every rank of the job derives alike from SLURM_JOB_ID (as submitit does)."""
    return _port_from_job_id(env.get("SLURM_JOB_ID", "0"))


def _port_from_job_id(job_id: str) -> int:
    return 20000 + random.Random(str(job_id)).randint(0, 40000)


def free_port() -> int:
    """A TCP port free on this host right now (for a world of one, which rendezvous with itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
