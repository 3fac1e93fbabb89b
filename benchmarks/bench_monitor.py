"""`textgan monitor` at scale: 1,000 run directories with long stats files, against one `sacct` call.

Goal (the monitor's issue): the monitor reads only the tail of each run's files, so 1,000 run directories with
long stats.jsonl files answer in about the time of one `sacct` call. Ratio (a)/(b) near 1 meets it; well above 1
means the monitor's own reading, not Slurm, is what a user waits for.

    python benchmarks/bench_monitor.py --runs 1000            # table; --json for the numbers as JSON
    python benchmarks/bench_monitor.py --runs 100 --cold      # distinct stats files, evicted before each (a)
    python benchmarks/run.py monitor                          # the same at the defaults, into BENCHMARKS.md

It builds, under a temporary directory (removed at the end unless --keep), --runs run directories the way
training writes them: config.yaml (the demo's resolved config, schedule.total_kimg set), stats.jsonl of --ticks
lines (~2.2 kB each, the key set of a real demo line: ~45 MB at the default 20,000), heartbeat.json,
attempts.jsonl (1-3 attempts: a Slurm requeue keeps the job id, a manual resume gets a new one; job ids
7000000 + i, which the test cluster has never seen), metric-fid10k.jsonl (--evaluations lines with the
evaluator's protocol and timing) and logs/. Unless --cold, ONE stats file is written and hard-linked into every
run directory (1,000 distinct 45 MB files would take 45 GB): the monitor reads each file's tail either way, but
the page cache then holds that one tail for all runs. --cold writes distinct files (after checking the disk has
room) and, before each (a), evicts the files this benchmark wrote -- only those -- from the page cache
(posix_fadvise DONTNEED); directory entries and inodes stay cached.

Measured side by side, interleaved (the order rotates every repeat), medians of --repeats:
  (a) `python -m textgan monitor ROOT --json` (plus --all where the CLI accepts it) as a subprocess: the whole
      command, start-up, imports, reading every run, the JSON, and the Slurm commands it runs (listed in the output: one squeue
      and one sacct for all runs);
  (b) one `sacct -X -D -P -n -j <the runs' latest job ids> -o ...` of the kind the monitor makes (when sacct is
      installed and a cluster answers; SLURM_CONF is taken from the environment, else the test cluster's);
  (c) `python -c pass`: the floor of any Python command;
  (d) `python -c "import textgan.cli, textgan.monitor.run_state"`: start-up and the monitor's imports.
In-process, on a few runs: the bytes read (/proc/self/io's rchar, around each reader) against the file sizes,
and where read_run's time goes (each file read the way read_run reads it, timed over every run).
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

from harness import Result  # noqa: E402

TEST_CLUSTER_CONF = "/tmp/textgan-slurm/etc/slurm.conf"  # tests/slurm/cluster.sh's cluster
from textgan.monitor.slurm_jobs import SACCT_FIELDS as MONITOR_SACCT_FIELDS  # noqa: E402

SACCT_FIELDS = ",".join(MONITOR_SACCT_FIELDS)  # exactly the fields the monitor asks for
FIRST_JOB = 7_000_000
NOW = time.time()
# The keys of a real demo stats.jsonl line (StatsWriter: {"num", "mean", "std"} each, then "timestamp"); "num"
# is how many values the tick averaged: 1 for per-tick numbers, the tick's iterations (or reg. steps) for losses.
PER_TICK = ("Progress/tick", "Progress/kimg", "Data/skipped", "Progress/lr_multiplier", "Resources/peak_mem_gb",
            "Timing/elapsed_sec", "Timing/eta_sec", "Timing/sec_per_kimg", "Timing/sec_per_tick")
PER_ITER = ("Health/nonfinite_skips", "Loss/D/adv_fake", "Loss/D/adv_real", "Loss/D/contrastive/D_it",
            "Loss/D/matching", "Loss/G/adv", "Loss/G/contrastive/D_ii", "Loss/G/contrastive/D_it",
            "Loss/G/contrastive/clip_ii", "Loss/G/contrastive/clip_it", "Loss/G/contrastive/total",
            "Stats/D/logits_fake", "Stats/D/logits_real", "Stats/D/real_sign", "Stats/G/logits_fake",
            "Stats/contrastive/temperature_D")
PER_REG = ("Loss/D/r1", "Stats/D/logits_real_reg")
KIMG_PER_TICK = 4.0
SEC_PER_KIMG = 80.0


def _utc(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(unix))


def stats_file(path: str, ticks: int, seed: int = 0) -> int:
    """A stats.jsonl of `ticks` lines as StatsWriter writes them, ending a minute ago; its size in bytes."""
    rng = random.Random(seed)
    start = NOW - 60 - ticks * KIMG_PER_TICK * SEC_PER_KIMG
    with open(path, "w", encoding="utf-8") as f:
        for tick in range(1, ticks + 1):
            sec_per_kimg = SEC_PER_KIMG * rng.uniform(0.95, 1.05)
            elapsed = tick * KIMG_PER_TICK * SEC_PER_KIMG
            per_tick = {"Progress/tick": tick, "Progress/kimg": tick * KIMG_PER_TICK, "Data/skipped": 0.0,
                        "Progress/lr_multiplier": 1.0, "Resources/peak_mem_gb": 0.9477, "Timing/elapsed_sec": elapsed,
                        "Timing/eta_sec": 1e4, "Timing/sec_per_kimg": sec_per_kimg,
                        "Timing/sec_per_tick": sec_per_kimg * KIMG_PER_TICK}
            line = {k: {"num": 1, "mean": float(v), "std": 0.0} for k, v in per_tick.items()}
            line.update({k: {"num": 125, "mean": rng.gauss(0, 2), "std": rng.uniform(0, 1)} for k in PER_ITER})
            line.update({k: {"num": 8, "mean": rng.gauss(0, 1), "std": rng.uniform(0, 1)} for k in PER_REG})
            line["timestamp"] = start + elapsed
            f.write(json.dumps(line) + "\n")
    return os.path.getsize(path)


def config_text(total_kimg: float) -> str:
    """The demo's resolved config as training writes it into config.yaml (~100 lines)."""
    from textgan.config import load_config
    from textgan.train.rundir import _resolved_yaml

    return _resolved_yaml(load_config(os.path.join(ROOT, "configs", "demo.yaml"), [f"schedule.total_kimg={total_kimg}"]))


def metric_lines(evaluations: int, ticks: int, run_dir: str, rng: random.Random) -> str:
    """metric-fid10k.jsonl with `evaluations` lines spread over the run, shaped like the evaluator's."""
    lines = []
    for n in range(1, evaluations + 1):
        tick = max(1, ticks * n // evaluations)
        fid = 300.0 / (1 + 0.1 * n) + rng.uniform(0, 2)
        lines.append(json.dumps({
            "metric": "fid10k", "value": fid, "results": {"fid": fid}, "kimg": tick * KIMG_PER_TICK, "tick": tick,
            "snapshot": os.path.join(run_dir, "checkpoints", f"{tick:06d}"), "timestamp": NOW - 3600 * (evaluations - n),
            "protocol": {"metric": "fid10k", "kind": "fid", "reference_set": "train",
                         "reference": {"shards": "/data/shards/coco64", "manifest_sha256": "0" * 64, "source": "coco",
                                       "split": "train", "resolution": 64, "crop": "center", "quality": 95,
                                       "images": 82783, "skipped_in_manifest": 0},
                         "num_samples": 10000, "captions": {"source": "train reference shards", "seed": 0},
                         "latents": {"seed": 0, "noise_mode": "const"}, "extractor": "inception-v3-compat",
                         "libraries": {"torch": "2.14.1", "torch-fidelity": "0.4.0", "numpy": "2.4.6",
                                       "pillow": "13.0.0", "textgan": "0.1.0"}},
            "timing": {"seconds": 95.0, "images": 10000, "images_per_sec": 105.3, "shared_with": []}}))
    return "\n".join(lines) + "\n"


def attempt_lines(i: int, runs: int, ticks: int) -> tuple:
    """attempts.jsonl of run i (1, 2 or 3 attempts: a requeue keeps the job id, a manual resume gets a new one)
    and the latest attempt's job id."""
    count = (1, 1, 1, 2, 2, 3)[i % 6]
    jobs = [str(FIRST_JOB + i), str(FIRST_JOB + i), str(FIRST_JOB + runs + i)][:count]
    hosts = f"node{i % 64 + 1:03d}"
    lines, unix = [], NOW - 60 - ticks * KIMG_PER_TICK * SEC_PER_KIMG
    for attempt, job in enumerate(jobs, start=1):
        identity = {"attempt": attempt, "job_id": job, "array_task": None, "hosts": hosts,
                    "restart_count": 1 if attempt == 2 else 0}
        lines.append({"event": "start", "unix": unix, "utc": _utc(unix), **identity,
                      "resume": None if attempt == 1 else "auto"})
        if attempt < count:
            unix += 86400
            lines.append({"event": "end", "unix": unix, "utc": _utc(unix), **identity, "outcome": "requeued",
                          "kimg": attempt * 1000.0})
            unix += 120
    return "".join(json.dumps(x) + "\n" for x in lines), jobs[-1]


def disk_room(path: str, need: int) -> None:
    free = shutil.disk_usage(path).free
    margin = max(5 << 30, free // 10)  # others share this disk: leave it room
    if need + margin > free:
        raise SystemExit(f"bench_monitor: --cold needs {need / 2**30:.1f} GiB for the distinct stats files (+ "
                         f"{margin / 2**30:.1f} GiB left free) but {path} has {free / 2**30:.1f} GiB free; use fewer "
                         "--runs or --ticks, or drop --cold")


def build(root: str, runs: int, ticks: int, evaluations: int, cold: bool) -> dict:
    """The run directories under root/runs; what was built."""
    rng = random.Random(0)
    total_kimg = ticks * KIMG_PER_TICK * 1.25  # every run is 80% done
    config = config_text(total_kimg)
    runs_dir = os.path.join(root, "runs")
    os.makedirs(runs_dir)
    master = os.path.join(root, "stats-master.jsonl")
    size = stats_file(master, ticks)
    if cold:
        disk_room(root, runs * size)
    jobs, written = [], []
    for i in range(runs):
        run_dir = os.path.join(runs_dir, f"{i:05d}-bench")
        os.makedirs(os.path.join(run_dir, "logs"))
        stats = os.path.join(run_dir, "stats.jsonl")
        if cold:
            shutil.copyfile(master, stats)  # a distinct inode per run: its own pages in the cache
        else:
            os.link(master, stats)
        files = {"config.yaml": config, "metric-fid10k.jsonl": metric_lines(evaluations, ticks, run_dir, rng)}
        files["attempts.jsonl"], job = attempt_lines(i, runs, ticks)
        attempt = files["attempts.jsonl"].count('"event": "start"')
        phase = "training" if i % 10 else "finished"
        files["heartbeat.json"] = json.dumps({
            "format": "textgan-heartbeat", "version": 1, "unix": NOW - 20, "utc": _utc(NOW - 20),
            "kimg": ticks * KIMG_PER_TICK, "tick": ticks, "phase": phase, "attempt": attempt, "job_id": job,
            "array_task": None, "hosts": f"node{i % 64 + 1:03d}", "pid": 4000 + i, "every_s": 30.0}) + "\n"
        files[f"logs/{job}_0_log.out"] = "attempt banner\n" * 20
        files[f"logs/{job}_0_log.err"] = ""
        for name, text in files.items():
            with open(os.path.join(run_dir, name), "w", encoding="utf-8") as f:
                f.write(text)
        jobs.append(job)
        written += [stats] + [os.path.join(run_dir, name) for name in files]
    if not cold:
        written.append(master)
    return {"runs_dir": runs_dir, "jobs": jobs, "stats_bytes": size, "written": written,
            "metric_bytes": os.path.getsize(os.path.join(runs_dir, "00000-bench", "metric-fid10k.jsonl")),
            "config_bytes": len(config.encode())}


def evict(paths) -> None:
    """Drop these files' pages from the page cache (and only theirs)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def slurm_env() -> dict:
    env = dict(os.environ)
    if "SLURM_CONF" not in env and os.path.exists(TEST_CLUSTER_CONF):
        env["SLURM_CONF"] = TEST_CLUSTER_CONF
    return env


def sacct_command(jobs) -> list:
    """One sacct of the kind the monitor makes, or None (with the reason printed) when none can answer."""
    if shutil.which("sacct") is None:
        print("bench_monitor: sacct is not installed: (b) is left out", file=sys.stderr)
        return None
    env = slurm_env()
    try:
        probe = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        probe = subprocess.CompletedProcess([], 1, "", str(e))
    if probe.returncode != 0:
        print(f"bench_monitor: no Slurm cluster answers (sinfo: {probe.stderr.strip()[:200]}); (b) is left out; "
              f"the test cluster starts with `bash tests/slurm/cluster.sh start`", file=sys.stderr)
        return None
    known = set(subprocess.run(["sacct", "--helpformat"], capture_output=True, text=True, env=env).stdout.split())
    fields = [f for f in SACCT_FIELDS.split(",") if f in known]
    if len(fields) < len(SACCT_FIELDS.split(",")):  # e.g. Restarts, which Slurm 22.05's sacct does not know
        print(f"bench_monitor: this sacct does not know {sorted(set(SACCT_FIELDS.split(',')) - known)}: (b) asks "
              f"for the other fields", file=sys.stderr)
    return ["sacct", "-X", "-D", "-P", "-n", "-j", ",".join(dict.fromkeys(jobs)), "-o", ",".join(fields)]


def known_jobs(env: dict, limit: int) -> list:
    """Up to `limit` job ids the cluster's accounting holds (any user, any age): a sacct that finds its jobs
    returns rows, one that does not (the benchmark's made-up ids) returns none."""
    proc = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "-S", "2000-01-01", "-o", "JobID"], capture_output=True,
                          text=True, env=env, timeout=60)
    return list(dict.fromkeys(line.split("_")[0] for line in proc.stdout.split() if line))[-limit:]


def run_noting_slurm(cmd, env: dict, root: str) -> tuple:
    """Run `cmd` once with sacct, squeue, scontrol and sinfo on PATH as wrappers that note their name and hand
    over to the real command: (seconds, the finished process, the Slurm commands it ran)."""
    bin_dir, log = os.path.join(root, "slurm-wrappers"), os.path.join(root, "slurm-calls.log")
    os.makedirs(bin_dir, exist_ok=True)
    for name in ("sacct", "squeue", "scontrol", "sinfo"):
        real = shutil.which(name)
        if real:
            path = os.path.join(bin_dir, name)
            with open(path, "w") as f:
                f.write(f'#!/bin/sh\necho {name} >> "{log}"\nexec "{real}" "$@"\n')
            os.chmod(path, 0o755)
    seconds, proc = timed(cmd, dict(env, PATH=bin_dir + os.pathsep + env.get("PATH", "")))
    if not os.path.exists(log):
        return seconds, proc, []
    with open(log) as f:
        return seconds, proc, f.read().split()


def monitor_command(runs_dir: str) -> tuple:
    """`python -m textgan monitor ROOT --json`, with --all where this version of the CLI accepts it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               SLURM_CONF=slurm_env().get("SLURM_CONF", ""))
    if not env["SLURM_CONF"]:
        del env["SLURM_CONF"]
    help_text = subprocess.run([sys.executable, "-m", "textgan", "monitor", "--help"], capture_output=True,
                               text=True, env=env, timeout=60).stdout
    cmd = [sys.executable, "-m", "textgan", "monitor", runs_dir, "--json"]
    return cmd + (["--all"] if "--all" in help_text else []), env


def timed(cmd, env=None, check=True) -> tuple:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=600)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ...: exit {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return seconds, proc


def rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def bytes_read(fn) -> int:
    """Bytes read by read() system calls while fn runs (rchar counts cache hits too), less the probe's own."""
    before = rchar()
    fn()
    after = rchar()
    before2 = rchar()
    probe = rchar() - before2  # reading /proc/self/io counts itself
    return after - before - probe


def read_sizes(runs_dir: str, sample: int) -> dict:
    """Bytes each reader reads of a few runs, in this process."""
    from textgan.metrics.history import metric_summary
    from textgan.monitor.run_state import RECENT_TICKS, STATS_FILE, read_run
    from textgan.monitor.tail import tail_json

    if not os.path.exists("/proc/self/io"):
        return {}
    dirs = sorted(os.path.join(runs_dir, d) for d in os.listdir(runs_dir))[:sample]
    read_run(dirs[0])  # imports and first-call work outside the count
    out = {"runs": len(dirs), "read_run": [], "stats_tail": [], "metric_file": [], "run_dir_total": []}
    for d in dirs:
        out["read_run"].append(bytes_read(lambda: read_run(d)))
        out["stats_tail"].append(bytes_read(lambda: tail_json(os.path.join(d, STATS_FILE), RECENT_TICKS)))
        out["metric_file"].append(bytes_read(lambda: metric_summary(os.path.join(d, "metric-fid10k.jsonl"))))
        out["run_dir_total"].append(sum(os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(d) for f in fs))
    return {k: (statistics.median(v) if isinstance(v, list) else v) for k, v in out.items()}


def time_split(runs_dir: str) -> dict:
    """Milliseconds per run of read_run, in this process over every run, and of each file read the way read_run
    reads it (timed plainly: a profiler's per-call cost would inflate pure-Python parsing the most)."""
    from textgan.metrics.history import metric_summary
    from textgan.monitor.cli import find_runs
    from textgan.monitor.run_state import CONFIG_FILE, RECENT_TICKS, STATS_FILE, _total_kimg, read_run
    from textgan.monitor.tail import tail_json
    from textgan.train.heartbeat import ATTEMPTS_FILE, HEARTBEAT_FILE

    def load_json(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    runs = find_runs([runs_dir])
    parts = {"read_run": lambda d: read_run(d),
             CONFIG_FILE + " (total_kimg)": lambda d: _total_kimg(d),
             "metric-fid10k.jsonl (metric_summary)": lambda d: metric_summary(os.path.join(d, "metric-fid10k.jsonl"),
                                                                              with_latest_kimg=True),
             STATS_FILE + " (tail_json)": lambda d: tail_json(os.path.join(d, STATS_FILE), RECENT_TICKS),
             ATTEMPTS_FILE + " (tail_json)": lambda d: tail_json(os.path.join(d, ATTEMPTS_FILE), 1000),
             HEARTBEAT_FILE + " (json.load)": lambda d: load_json(os.path.join(d, HEARTBEAT_FILE))}
    out = {}
    for name, fn in parts.items():
        fn(runs[0])
        start = time.perf_counter()
        for d in runs:
            fn(d)
        out[name] = 1e3 * (time.perf_counter() - start) / len(runs)
    rows = [read_run(d) for d in runs]
    start = time.perf_counter()
    json.dumps(rows, indent=1)
    out["the JSON of all rows (json.dumps)"] = 1e3 * (time.perf_counter() - start) / len(runs)
    return out


def measure(runs: int = 1000, ticks: int = 20000, evaluations: int = 50, repeats: int = 5, cold: bool = False,
            keep: bool = False, sample: int = 5) -> dict:
    root = tempfile.mkdtemp(prefix="bench-monitor-")
    try:
        start = time.perf_counter()
        built = build(root, runs, ticks, evaluations, cold)
        build_sec = time.perf_counter() - start
        monitor_cmd, monitor_env = monitor_command(built["runs_dir"])
        sacct = sacct_command(built["jobs"])
        commands = {"monitor": (monitor_cmd, monitor_env),
                    "python": ([sys.executable, "-c", "pass"], None),
                    "imports": ([sys.executable, "-c", "import textgan.cli, textgan.monitor.run_state"], monitor_env)}
        known = []
        if sacct:
            commands["sacct"] = (sacct, slurm_env())
            known = known_jobs(slurm_env(), runs)
            if known:
                commands["sacct_known"] = (sacct[:6] + [",".join(known)] + sacct[7:], slurm_env())
        # warm-up, a check that every run came back, and which Slurm commands the monitor runs
        first, proc, monitor_slurm_calls = run_noting_slurm(monitor_cmd, monitor_env, root)
        shown = len(json.loads(proc.stdout)["runs"])
        if shown != runs:
            raise RuntimeError(f"the monitor showed {shown} runs of {runs}")
        sacct_rows = known_rows = None
        if sacct:
            _, proc = timed(sacct, slurm_env())
            sacct_rows = len(proc.stdout.splitlines())
            if known:
                _, proc = timed(*commands["sacct_known"])
                known_rows = len(proc.stdout.splitlines())
        seconds = {name: [] for name in commands}
        names = list(commands)
        for rep in range(repeats):
            for name in names[rep % len(names):] + names[:rep % len(names)]:  # no command always runs first
                if cold and name == "monitor":
                    evict(built["written"])
                seconds[name].append(timed(*commands[name])[0])
        out = {"runs": runs, "ticks": ticks, "evaluations": evaluations, "repeats": repeats, "cold": cold,
               "hard_linked_stats": not cold, "build_sec": build_sec, "monitor_first_sec": first,
               "monitor_command": " ".join(["python"] + monitor_cmd[1:3] + ["monitor", "ROOT"] + monitor_cmd[5:]),
               "monitor_all_flag": "--all" in monitor_cmd, "sacct_command": None if not sacct else
               " ".join(sacct[:6] + [f"<{len(set(built['jobs']))} job ids>"] + sacct[7:]),
               "sacct_rows": sacct_rows, "sacct_known_jobs": len(known), "sacct_known_rows": known_rows,
               "monitor_slurm_calls": monitor_slurm_calls, "slurm_conf": slurm_env().get("SLURM_CONF"),
               "seconds": {k: statistics.median(v) for k, v in seconds.items()}, "all_seconds": seconds,
               "stats_bytes": built["stats_bytes"], "metric_bytes": built["metric_bytes"],
               "config_bytes": built["config_bytes"]}
        out["per_run_ms"] = 1e3 * (out["seconds"]["monitor"] - out["seconds"]["imports"]) / runs
        if sacct:
            out["ratio_monitor_over_sacct"] = out["seconds"]["monitor"] / out["seconds"]["sacct"]
        out["read"] = read_sizes(built["runs_dir"], sample)
        out["ms_per_run"] = time_split(built["runs_dir"])
        out["root"] = root if keep else None
        return out
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def report(out: dict) -> str:
    s = out["seconds"]
    kind = "distinct files, evicted before each (a)" if out["cold"] else "one file hard-linked into every run"
    lines = [f"{out['runs']} runs, stats.jsonl {out['ticks']} lines = {out['stats_bytes'] / 1e6:.1f} MB each ({kind}), "
             f"{out['evaluations']} fid10k evaluations; median of {out['repeats']}, interleaved",
             "", f"{'':44}{'seconds':>9}{'vs (b)':>9}"]
    rows = [("(a) " + out["monitor_command"], s["monitor"]), ("(b) one sacct" + (
        f" ({out['sacct_rows']} rows back)" if "sacct" in s else ": left out (no cluster)"), s.get("sacct")),
            (f"(b') sacct of {out['sacct_known_jobs']} jobs it knows ({out['sacct_known_rows']} rows)",
             s.get("sacct_known")), ("(c) python -c pass", s["python"]), ("(d) python + the monitor's imports", s["imports"])]
    for label, value in rows if "sacct_known" in s else rows[:2] + rows[3:]:
        ratio = f"{value / s['sacct']:9.2f}" if value is not None and "sacct" in s else ""
        lines.append(f"{label[:44]:44}{'-' if value is None else f'{value:.3f}':>9}{ratio}")
    lines += ["", f"per run: {out['per_run_ms']:.2f} ms ((a) - (d)) / runs; Slurm commands (a) ran: "
              f"{' '.join(out['monitor_slurm_calls']) or 'none'}"]
    if "ratio_monitor_over_sacct" in out:
        lines.append(f"ratio (a)/(b): {out['ratio_monitor_over_sacct']:.1f} (goal: about 1)")
    r = out["read"]
    if r:
        lines.append(f"bytes read per run (median of {r['runs']}): read_run {r['read_run']:,.0f} of "
                     f"{r['run_dir_total']:,.0f} in the run dir; stats.jsonl tail {r['stats_tail']:,.0f} of "
                     f"{out['stats_bytes']:,}; metric-fid10k.jsonl {r['metric_file']:,.0f} (read whole)")
    lines.append("in-process, ms per run: " + ", ".join(f"{k} {v:.2f}" for k, v in out["ms_per_run"].items()))
    return "\n".join(lines)


def run(quick: bool = False) -> list:
    out = measure(runs=100 if quick else 1000, ticks=2000 if quick else 20000, repeats=3 if quick else 5)
    s, r, n = out["seconds"], out["read"], out["runs"]
    calls = " and ".join(out["monitor_slurm_calls"])
    what = (f"`{out['monitor_command']}` over {n} run dirs (stats.jsonl of {out['ticks']} lines, "
            f"{out['stats_bytes'] / 1e6:.0f} MB each)")
    notes = [f"monitor/vs_sacct: per run {out['per_run_ms']:.2f} ms (the monitor's seconds less those of `python -c "
             f"'import textgan.cli, textgan.monitor.run_state'`, {s['imports']:.3f} s, over {n} runs; `python -c pass` "
             f"takes {s['python']:.3f} s). Slurm commands the monitor ran: {calls or 'none (it reads run dirs only)'}."]
    if "sacct" in s:
        notes.append(f"monitor/vs_sacct: the sacct asks for the runs' latest job ids, 7000000 + i, which this test "
                     f"cluster never ran ({out['sacct_rows']} rows back)" + (
                         f"; the same sacct of the {out['sacct_known_jobs']} jobs its accounting holds "
                         f"({out['sacct_known_rows']} rows) takes {s['sacct_known']:.3f} s" if "sacct_known" in s else "")
                     + ". The test cluster (tests/slurm/cluster.sh) runs its controller and database on this machine "
                     "with a small database: a production cluster's sacct over 1,000 jobs usually takes seconds, "
                     "and this ratio falls in proportion.")
    ms = out["ms_per_run"]
    config_share = ms["config.yaml (total_kimg)"] / ms["read_run"]
    if "sacct" in s:
        met = out["ratio_monitor_over_sacct"] <= 1.5
        notes.append(f"What it means: the goal is {'met' if met else 'not met'} here: the monitor takes "
                     f"{out['ratio_monitor_over_sacct']:.2g}x one sacct of this cluster. Reading stays small per run "
                     f"(monitor/stats_bytes); of read_run's time {100 * config_share:.0f}% is finding "
                     "schedule.total_kimg in config.yaml (a line scan; PyYAML's pure-Python loader took ~5 ms per run, "
                     "80% of the refresh, before it).")
    notes.append("in-process, milliseconds per run: " + ", ".join(f"{k} {v:.2f}" for k, v in out["ms_per_run"].items())
                 + " (the files' reads overlap read_run's: it is their sum plus globbing and stat calls).")
    if r:
        notes.append(f"monitor/stats_bytes: bytes read (rchar, median of {r['runs']} runs): read_run reads "
                     f"{r['read_run']:,.0f} of the run dir's {r['run_dir_total']:,.0f}; of stats.jsonl, the last "
                     f"{r['stats_tail']:,.0f} (tail.py reads a 16 KiB block from the end, then 64 KiB blocks until it has the lines; the 3 lines it keeps are "
                     f"{3 * out['stats_bytes'] / out['ticks']:,.0f} bytes); "
                     f"metric-fid10k.jsonl is read whole ({r['metric_file']:,.0f} bytes for {out['evaluations']} "
                     "evaluations).")
    notes.append(f"One stats.jsonl is hard-linked into all {n} run dirs ({n:,} distinct files would take "
                 f"{n * out['stats_bytes'] / 1e9:.1f} GB): the monitor still reads each file's tail, but from a page "
                 "cache warm for all of them; every other file is per run and, written just before, cached too. "
                 "`python benchmarks/bench_monitor.py --cold` writes distinct files and evicts them before each call.")
    results = []
    if "sacct" in s:
        results.append(Result(name="monitor/vs_sacct", what=what + f" over one sacct of their {n} job ids (goal: "
                              "about 1)", baseline="one sacct", candidate="textgan monitor", baseline_value=s["sacct"],
                              candidate_value=s["monitor"], unit="s"))
    else:
        notes.insert(0, "no Slurm cluster answered: the ratio to one sacct call is left out")
    results.append(Result(name="monitor/vs_python", what=what + " over `python -c pass`", baseline="python -c pass",
                          candidate="textgan monitor", baseline_value=s["python"], candidate_value=s["monitor"],
                          unit="s"))
    if r:
        results.append(Result(name="monitor/stats_bytes", what="bytes of one run's stats.jsonl the monitor reads "
                              "over the file's size", baseline="file", candidate="read", baseline_value=out["stats_bytes"],
                              candidate_value=r["stats_tail"], unit="B"))
    results[-1].notes = notes
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--ticks", type=int, default=20000, help="lines of each stats.jsonl")
    p.add_argument("--evaluations", type=int, default=50, help="lines of each metric-fid10k.jsonl")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cold", action="store_true", help="distinct stats files (needs runs x file size of disk), "
                                                       "evicted from the page cache before each monitor call")
    p.add_argument("--keep", action="store_true", help="keep the run directories (the path is printed)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    out = measure(args.runs, args.ticks, args.evaluations, args.repeats, args.cold, args.keep)
    print(json.dumps(out, indent=1) if args.json else report(out))
    if args.keep:
        print(f"kept: {out['root']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
