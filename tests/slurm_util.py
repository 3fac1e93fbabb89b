"""The real Slurm test cluster for tests marked `slurm` (see tests/slurm/cluster.sh).

    import pytest
    from slurm_util import slurm_cluster  # noqa: F401  (the session fixture)

    pytestmark = pytest.mark.slurm

    def test_something(slurm_cluster, tmp_path):
        executor = slurm_cluster.executor(tmp_path / "jobs", nodes=2, tasks_per_node=2, timeout_min=5)
        job = executor.submit(fn)
        with slurm_cluster.logs_on_failure():
            assert job.result() == ...
            assert slurm_cluster.wait_for_state(job.job_id, {"COMPLETED"}) == "COMPLETED"

The session fixture `slurm_cluster`:
- uses a cluster that already answers `sinfo` (started by hand, by CI, or by another session);
- else starts ours with `cluster.sh start` when we are root and the Slurm packages are installed (or
  under CI=true), and stops it at the end of the session only if it started it;
- else skips with the reason (not root / packages missing). Under CI=true it never skips: a cluster
  that cannot start fails the tests, so CI cannot go green without running them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
CLUSTER_SH = TESTS_DIR / "slurm" / "cluster.sh"
STATE_DIR = Path(os.environ.get("TEXTGAN_SLURM_STATE", "/tmp/textgan-slurm"))
OUR_CONF = STATE_DIR / "etc" / "slurm.conf"
LOG_DIR = STATE_DIR / "log"
# What cluster.sh declares (keep in sync with it).
PARTITION = "debug"
CPUS_PER_NODE = 4
# Daemons and commands cluster.sh needs; absent ones mean `cluster.sh install` has not run.
REQUIRED_COMMANDS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sinfo", "sacct", "sbatch")
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _run(args, timeout=30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def _use_our_conf_if_present() -> None:
    """Point Slurm commands (ours and the jobs', which inherit the environment) at our cluster's config."""
    if "SLURM_CONF" not in os.environ and OUR_CONF.exists():
        os.environ["SLURM_CONF"] = str(OUR_CONF)


def _our_controller_is_local() -> bool:
    """Our config names the bridge address; ask it only while the bridge exists (else the request
    would leave the machine through the default route)."""
    mode_file = STATE_DIR / "mode"
    if not mode_file.exists():
        return False
    return mode_file.read_text().strip() == "localhost" or Path("/sys/class/net/tgslurm0").exists()


def sinfo_answers() -> bool:
    # Without any config, sinfo looks the controller up in DNS: don't ask it then.
    conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    if shutil.which("sinfo") is None or not os.path.exists(conf):
        return False
    if os.path.realpath(conf) == str(OUR_CONF) and not _our_controller_is_local():
        return False
    try:
        return _run(["sinfo", "-h", "-o", "%P"], timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def log_tails(lines: int = 40) -> str:
    """The last lines of every daemon log of our cluster (for failure messages)."""
    if not LOG_DIR.is_dir():
        return f"(no Slurm logs: {LOG_DIR} does not exist)"
    parts = []
    for path in sorted(LOG_DIR.glob("*.log")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"----- {path} (last {lines} lines)\n" + "\n".join(text))
    return "\n".join(parts)


def sacct_state(job_id: str) -> str | None:
    """The accounting state of a job (allocation line only), e.g. 'COMPLETED' or 'CANCELLED'; None if
    sacct does not know the job (yet). 'CANCELLED by 0' is reported as 'CANCELLED'."""
    out = _run(["sacct", "-j", str(job_id), "-X", "-n", "-P", "-o", "State"]).stdout.split()
    return out[0] if out else None


def wait_for_state(job_id: str, states, timeout: float = 90) -> str:
    """Poll sacct until the job reaches one of `states` (or any final state) and return it.
    Fails the test with the daemon logs if nothing final shows up within `timeout` seconds."""
    states = {states} if isinstance(states, str) else set(states)
    deadline, state = time.time() + timeout, None
    while time.time() < deadline:
        state = sacct_state(job_id)
        if state in states or state in FINAL_STATES:
            return state
        time.sleep(1)
    pytest.fail(f"job {job_id} still {state} after {timeout}s (wanted {sorted(states)})\n{log_tails()}")


@dataclass
class SlurmCluster:
    """What tests need to know about the cluster they run on."""

    partition: str
    nodes: list[str]
    cpus_per_node: int
    mode: str  # "netns" (one network namespace + hostname per node), "localhost", or "external"
    log_dir: Path | None
    started_here: bool = field(default=False, repr=False)

    def executor(self, folder, **slurm_params):
        """A submitit AutoExecutor on this cluster; `slurm_params` without the `slurm_` prefix
        (e.g. nodes=2, tasks_per_node=2, timeout_min=5). Jobs can import the test helpers
        (tests/ is put on their PYTHONPATH), so functions from test modules unpickle there."""
        import submitit

        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params = dict(partition=self.partition, timeout_min=5, cpus_per_task=1)
        params.update(slurm_params)
        setup = [f'export PYTHONPATH="{TESTS_DIR}${{PYTHONPATH:+:$PYTHONPATH}}"'] + list(params.pop("setup", []))
        executor.update_parameters(**{f"slurm_{k}": v for k, v in params.items()}, slurm_setup=setup)
        return executor

    state = staticmethod(sacct_state)
    wait_for_state = staticmethod(wait_for_state)
    logs = staticmethod(log_tails)

    @contextlib.contextmanager
    def logs_on_failure(self, lines: int = 40):
        """Print the daemon logs (pytest shows them with the failure) if the block raises."""
        try:
            yield
        except BaseException:
            print(log_tails(lines), file=sys.stderr)
            raise


def _describe_running() -> SlurmCluster:
    rows = _run(["sinfo", "-h", "-N", "-o", "%N %P %c"]).stdout.split("\n")
    rows = [r.split() for r in rows if r.strip()]
    default = next((p for _, p, _ in rows if p.endswith("*")), rows[0][1] if rows else PARTITION).rstrip("*")
    nodes = sorted({n for n, p, _ in rows if p.rstrip("*") == default})
    cpus = min((int(c) for n, p, c in rows if p.rstrip("*") == default), default=0)
    ours = os.environ.get("SLURM_CONF") == str(OUR_CONF) and (STATE_DIR / "mode").exists()
    mode = (STATE_DIR / "mode").read_text().strip() if ours else "external"
    return SlurmCluster(default, nodes, cpus, mode, LOG_DIR if ours else None)


def _cannot_start(reason: str):
    if in_ci():  # CI must run these tests for real: never a silent skip there
        pytest.fail(f"Slurm test cluster unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def _start() -> None:
    started = time.time()
    try:
        proc = _run(["bash", str(CLUSTER_SH), "start"], timeout=240)
    except subprocess.TimeoutExpired:
        _cannot_start(f"{CLUSTER_SH} start did not finish within 240 s\n{log_tails()}")
    if proc.returncode != 0:
        _cannot_start(f"{CLUSTER_SH} start failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    print(f"\n[slurm] started the test cluster in {time.time() - started:.0f}s: {proc.stdout.strip()}")


@pytest.fixture(scope="session")
def slurm_cluster():
    _use_our_conf_if_present()
    if sinfo_answers():
        yield _describe_running()
        return
    sbin_path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"  # daemons live there, often off a user's PATH
    missing = [c for c in REQUIRED_COMMANDS if shutil.which(c, path=sbin_path) is None]
    if os.geteuid() != 0:
        _cannot_start("no Slurm cluster answers `sinfo`, and starting the test cluster "
                      f"({CLUSTER_SH} start) needs root")
    if missing and not in_ci():
        _cannot_start(f"no Slurm cluster answers `sinfo`, and the Slurm packages are not installed "
                      f"(missing {', '.join(missing)}): run `{CLUSTER_SH} install` as root")
    _start()
    _use_our_conf_if_present()
    if not sinfo_answers():
        _cannot_start(f"the test cluster started but `sinfo` does not answer\n{log_tails()}")
    cluster = _describe_running()
    cluster.started_here = True
    try:
        yield cluster
    finally:
        proc = _run(["bash", str(CLUSTER_SH), "stop"], timeout=120)
        if proc.returncode != 0:
            print(f"[slurm] {CLUSTER_SH} stop failed: {proc.stdout}{proc.stderr}", file=sys.stderr)
