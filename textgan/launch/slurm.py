"""The Slurm side of a submission: command-line options -> one checked request -> submitit parameters.

    add_slurm_arguments(parser)              # --nodes --gpus-per-node --time --partition ... --sbatch K=V
    request = slurm_request(args)            # validated; raises UsageError (exit 2) before anything exists
    executor = make_executor(request, folder, local=False)
    print(render_sbatch(request, folder))    # exactly the script submitit will hand to sbatch

Each option maps onto one parameter of submitit's SlurmExecutor, which writes it as an `#SBATCH` line
(SBATCH_FLAGS below, also shown in the README). submitit adds what makes requeue work: `--signal=USR2@delay`
(the warning before the time limit), `--open-mode=append` (every attempt of a requeued job appends to the
same log files, so no attempt's log is lost) and srun with one process per task.

Nothing from the command line or a config reaches the shell unquoted: submitit quotes every `#SBATCH`
value and every srun argument (shlex.quote), and executor_parameters / render_sbatch refuse control
characters (newlines above all) in every value and path written into the script, because a newline in
a `#SBATCH` value ends the comment and starts a command line. --setup lines are shell commands by design
(e.g. `module load cuda`): each is one line, written as given. tests/test_sbatch_quoting.py runs the
rendered script with bash to prove it.
"""

import dataclasses
import re
import shlex
import shutil
import sys
from typing import Dict, List, Optional

from textgan.errors import UsageError

# option -> the sbatch flag it becomes (for --help and the README)
SBATCH_FLAGS = {
    "--nodes": "--nodes",
    "--gpus-per-node": "--gpus-per-node",
    "--tasks-per-node": "--ntasks-per-node",
    "--cpus-per-task": "--cpus-per-task",
    "--mem": "--mem",
    "--time / --timeout-min": "--time (minutes)",
    "--partition": "--partition",
    "--account": "--account",
    "--qos": "--qos",
    "--constraint": "--constraint",
    "--exclude": "--exclude",
    "--nodelist": "--nodelist",
    "--job-name": "--job-name",
    "--signal-delay": "--signal=USR2@SECONDS",
    "--sbatch KEY=VALUE": "--KEY=VALUE",
}
# sbatch options that submitit writes itself; setting them through --sbatch would break logs or requeue
RESERVED_SBATCH = {"output", "error", "open-mode", "signal", "array", "wckey", "parsable"}
_TIME_FORMATS = (  # Slurm's accepted --time formats, as (regex, fields)
    (r"(\d+)", ("m",)),
    (r"(\d+):(\d{1,2})", ("m", "s")),
    (r"(\d+):(\d{1,2}):(\d{1,2})", ("h", "m", "s")),
    (r"(\d+)-(\d+)", ("d", "h")),
    (r"(\d+)-(\d+):(\d{1,2})", ("d", "h", "m")),
    (r"(\d+)-(\d+):(\d{1,2}):(\d{1,2})", ("d", "h", "m", "s")),
)
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_MEM = re.compile(r"\d+(\.\d+)?[KMGT]?B?", re.IGNORECASE)
DEFAULT_TIME = "1-00:00:00"
DEFAULT_SIGNAL_DELAY_S = 120
# submitit treats the USR2 warning as a time-out (not a preemption) when it comes after 80% of the
# time limit, or at any time for limits under 10 minutes; the signal must also leave time to save.
MIN_SECONDS_AFTER_SIGNAL = 60
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# the option (or config key) each submitit parameter comes from, for error messages
_PARAMETER_SOURCE = {"job_name": "--job-name (default: textgan-DESC, the config key 'desc')", "mem": "--mem",
                     "partition": "--partition", "account": "--account", "qos": "--qos", "constraint": "--constraint",
                     "exclude": "--exclude", "nodelist": "--nodelist", "additional_parameters": "--sbatch",
                     "setup": "--setup", "srun_args": "--cpus-per-task"}


def check_script_text(source: str, value) -> None:
    """UsageError unless value is one line without control characters: it is written into the batch script."""
    found = _CONTROL_CHARS.search(str(value))
    if found:
        raise UsageError(f"{source} {str(value)!r} contains the control character {found.group()!r}: values "
                         "written into the batch script must be one line of printable characters")


def parse_time(text: str) -> int:
    """A Slurm time limit ("90", "1:30:00", "2-12", "1-00:00:00", ...) in whole minutes, rounded up
    as Slurm does. Raises UsageError naming the accepted formats."""
    text = str(text).strip()
    for pattern, fields in _TIME_FORMATS:
        match = re.fullmatch(pattern, text)
        if match:
            seconds = sum(int(v) * _SECONDS[f] for v, f in zip(match.groups(), fields))
            if seconds <= 0:
                break
            return -(-seconds // 60)
    raise UsageError(f"--time {text!r} is not a Slurm time limit; use minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM "
                     "or D-HH:MM:SS (e.g. 90, 4:00:00, 2-00:00:00)")


def parse_sbatch_options(items: List[str]) -> Dict[str, object]:
    """--sbatch KEY=VALUE (repeatable; KEY without '=' is a flag, e.g. --sbatch exclusive) -> {key: value}."""
    options: Dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not key or not re.fullmatch(r"[a-z][a-z0-9-]*", key):
            raise UsageError(f"--sbatch {item!r}: expected KEY=VALUE with an sbatch option name, e.g. "
                             "--sbatch mail-type=END")
        if key in RESERVED_SBATCH:
            raise UsageError(f"--sbatch {key}: submitit sets --{key} itself (logs, requeue signal, arrays); "
                             "it cannot be overridden")
        named = {"nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task", "mem", "time", "partition",
                 "account", "qos", "constraint", "exclude", "nodelist", "job-name"}
        if key in named:
            raise UsageError(f"--sbatch {key}: use the option --{key.replace('ntasks', 'tasks')} instead")
        options[key] = value if sep else True
    return options


def add_slurm_arguments(p) -> None:
    """The resource and scheduling options shared by `textgan train` and `textgan sweep`."""
    g = p.add_argument_group("job resources (Slurm; --local uses only --tasks-per-node and --time)")
    g.add_argument("--nodes", type=int, default=1, help="nodes (sbatch --nodes)")
    g.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (sbatch --gpus-per-node); "
                   "one task (rank) per GPU")
    g.add_argument("--tasks-per-node", type=int, default=None,
                   help="ranks per node (sbatch --ntasks-per-node); default: --gpus-per-node, or 1 without GPUs "
                        "(CPU-only clusters: the number of processes)")
    g.add_argument("--cpus-per-task", type=int, default=None, help="CPU cores per rank (sbatch --cpus-per-task); "
                   "give it data.num_workers + 1 or more")
    g.add_argument("--mem", default=None, help="memory per node, e.g. 64G (sbatch --mem)")
    g.add_argument("--time", default=None, help=f"time limit in a Slurm format: minutes, HH:MM:SS, D-HH:MM:SS ... "
                   f"(sbatch --time; default {DEFAULT_TIME})")
    g.add_argument("--timeout-min", type=int, default=None, help="time limit in minutes (same as --time MINUTES)")
    g.add_argument("--partition", default=None, help="sbatch --partition")
    g.add_argument("--account", default=None, help="sbatch --account")
    g.add_argument("--qos", default=None, help="sbatch --qos")
    g.add_argument("--constraint", default=None, help="node features, e.g. a100 (sbatch --constraint)")
    g.add_argument("--exclude", default=None, help="nodes to avoid (sbatch --exclude)")
    g.add_argument("--nodelist", default=None, help="nodes to use (sbatch --nodelist)")
    g.add_argument("--job-name", default=None, help="sbatch --job-name (default: textgan-DESC)")
    g.add_argument("--sbatch", dest="sbatch_options", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option (repeatable), e.g. --sbatch mail-type=END --sbatch exclusive")
    g.add_argument("--setup", action="append", default=[], metavar="COMMAND",
                   help="shell line run in the batch script before the job (repeatable), e.g. 'module load cuda'; "
                        "written as given (it is a shell command), one line each")
    g.add_argument("--signal-delay", type=int, default=DEFAULT_SIGNAL_DELAY_S, metavar="SECONDS",
                   help="how long before the time limit Slurm warns the job (USR2) so it can checkpoint and "
                        f"requeue (default {DEFAULT_SIGNAL_DELAY_S})")
    g.add_argument("--max-requeues", type=int, default=None,
                   help="how often a preempted or timed-out job may requeue itself (default: the config's "
                        "schedule.max_requeues, 10)")


@dataclasses.dataclass
class SlurmRequest:
    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    time_min: int
    signal_delay_s: int
    max_requeues: int
    job_name: Optional[str] = None
    cpus_per_task: Optional[int] = None
    mem: Optional[str] = None
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    nodelist: Optional[str] = None
    extra: Dict[str, object] = dataclasses.field(default_factory=dict)
    setup: List[str] = dataclasses.field(default_factory=list)

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node

    def executor_parameters(self, array_parallelism: Optional[int] = None) -> dict:
        """Keyword arguments for submitit.SlurmExecutor.update_parameters (its native sbatch names)."""
        params = {
            "nodes": self.nodes, "ntasks_per_node": self.tasks_per_node, "time": self.time_min,
            "signal_delay_s": self.signal_delay_s, "job_name": self.job_name or "textgan",
            # srun's own --output would otherwise truncate the log of a requeued job on some setups.
            # --kill-on-bad-exit: when one task fails, srun ends the others at once; gloo ranks notice a
            # dead peer by themselves, but NCCL ranks can sit in a collective until its watchdog timeout
            # while the job holds every node.
            "srun_args": ["--open-mode=append", "--kill-on-bad-exit=1"],
        }
        if self.cpus_per_task:  # srun of Slurm 22.05+ no longer inherits the job's --cpus-per-task
            params["srun_args"].append(f"--cpus-per-task={self.cpus_per_task}")
        optional = {"gpus_per_node": self.gpus_per_node or None, "cpus_per_task": self.cpus_per_task,
                    "mem": self.mem, "partition": self.partition, "account": self.account, "qos": self.qos,
                    "constraint": self.constraint, "exclude": self.exclude, "nodelist": self.nodelist,
                    "additional_parameters": dict(self.extra) or None, "setup": list(self.setup) or None,
                    "array_parallelism": array_parallelism}
        params.update({k: v for k, v in optional.items() if v is not None})
        for key, value in params.items():  # every value submitit will write into the batch script
            if isinstance(value, dict):
                lines = [f"{k}={v}" for k, v in value.items()]
            else:
                lines = value if isinstance(value, list) else [value]
            for line in lines:
                check_script_text(_PARAMETER_SOURCE.get(key, key), line)
        return params


def slurm_request(args, local: bool = False) -> SlurmRequest:
    """Check the resource options (everything that can be known before sbatch) and build the request."""
    if args.nodes < 1:
        raise UsageError(f"--nodes must be >= 1 (got {args.nodes})")
    if args.gpus_per_node < 0:
        raise UsageError(f"--gpus-per-node must be >= 0 (got {args.gpus_per_node})")
    tasks = args.tasks_per_node if args.tasks_per_node is not None else (args.gpus_per_node or 1)
    if tasks < 1:
        raise UsageError(f"--tasks-per-node must be >= 1 (got {tasks})")
    if args.gpus_per_node and tasks > args.gpus_per_node:
        raise UsageError(f"--tasks-per-node {tasks} > --gpus-per-node {args.gpus_per_node}: each rank needs its "
                         "own GPU (leave --tasks-per-node out to get one task per GPU)")
    if args.time is not None and args.timeout_min is not None:
        raise UsageError("give the time limit once: --time or --timeout-min")
    if args.timeout_min is not None:
        if args.timeout_min < 1:
            raise UsageError(f"--timeout-min must be >= 1 (got {args.timeout_min})")
        time_min = args.timeout_min
    else:
        time_min = parse_time(args.time if args.time is not None else DEFAULT_TIME)
    if args.signal_delay < 1:
        raise UsageError(f"--signal-delay must be >= 1 second (got {args.signal_delay})")
    if time_min * 60 < args.signal_delay + MIN_SECONDS_AFTER_SIGNAL:
        raise UsageError(f"time limit {time_min} min leaves less than {MIN_SECONDS_AFTER_SIGNAL} s before the "
                         f"USR2 warning ({args.signal_delay} s before the end): raise --time or lower --signal-delay")
    if args.max_requeues is not None and args.max_requeues < 0:
        raise UsageError(f"--max-requeues must be >= 0 (got {args.max_requeues})")
    if args.cpus_per_task is not None and args.cpus_per_task < 1:
        raise UsageError(f"--cpus-per-task must be >= 1 (got {args.cpus_per_task})")
    if args.mem is not None and not _MEM.fullmatch(args.mem):
        raise UsageError(f"--mem {args.mem!r}: use a number with an optional unit K, M, G or T, e.g. 64G")
    if local and args.nodes != 1:
        raise UsageError("--local runs on this machine: use --nodes 1 (and --tasks-per-node for several ranks)")
    request = SlurmRequest(
        nodes=args.nodes, tasks_per_node=tasks, gpus_per_node=args.gpus_per_node, time_min=time_min,
        signal_delay_s=args.signal_delay, max_requeues=args.max_requeues, job_name=args.job_name,
        cpus_per_task=args.cpus_per_task, mem=args.mem, partition=args.partition, account=args.account,
        qos=args.qos, constraint=args.constraint, exclude=args.exclude, nodelist=args.nodelist,
        extra=parse_sbatch_options(args.sbatch_options), setup=list(args.setup))
    request.executor_parameters()  # refuses what cannot go into a batch script, before anything exists
    return request


def submitit_command(folder: str) -> str:
    """What the batch script runs on every task (as SlurmExecutor writes it)."""
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])


def render_sbatch(request: SlurmRequest, folder: str, array_size: Optional[int] = None,
                  array_parallelism: Optional[int] = None) -> str:
    """The batch script submitit will write for this request (SlurmExecutor's own template: submitit
    has no public renderer; tests/test_slurm_jobs.py checks it against the script a real job used)."""
    from submitit.slurm.slurm import _make_sbatch_string

    check_script_text("the log folder (--outdir, or the run directory)", folder)
    params = request.executor_parameters(array_parallelism)
    if array_size is not None and array_size > 1:
        params["map_count"] = array_size
    return _make_sbatch_string(command=submitit_command(folder), folder=folder, **params)


def have_slurm() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("srun") is not None


def require_slurm() -> None:
    if not have_slurm():
        raise UsageError("sbatch/srun not found: run this on a Slurm login node, or use --local to run on this "
                         "machine (--dry-run shows the batch script without Slurm)")


def make_executor(request: SlurmRequest, folder: str, local: bool, array_parallelism: Optional[int] = None):
    """A submitit executor for the request: SlurmExecutor, or LocalExecutor with --local.
    max_num_timeout = max_requeues, so submitit's own time-out count agrees with ours."""
    import submitit

    if local:
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=request.max_requeues)
        executor.update_parameters(timeout_min=request.time_min, tasks_per_node=request.tasks_per_node,
                                   nodes=1, signal_delay_s=request.signal_delay_s)
        return executor
    require_slurm()
    check_script_text("the log folder (--outdir, or the run directory)", folder)
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=request.max_requeues)
    executor.update_parameters(**request.executor_parameters(array_parallelism))
    return executor


def log_paths(folder: str, job_id: str, tasks: int) -> list:
    """stdout/stderr files of each task of a job (requeued attempts append to the same files)."""
    from submitit.core.utils import JobPaths

    return [(JobPaths(folder, job_id=job_id, task_id=t).stdout, JobPaths(folder, job_id=job_id, task_id=t).stderr)
            for t in range(tasks)]


