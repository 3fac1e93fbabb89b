"""What `textgan monitor --json` says, in-process, and what Slurm's accounting says to check it against."""

import contextlib
import io
import json
import subprocess

from textgan import cli


def monitor_report(*args) -> dict:
    """The monitor's JSON report for `args` (paths and options), as `textgan monitor ... --json` prints it."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["monitor", *map(str, args), "--json"])
    assert code == 0
    return json.loads(out.getvalue())


def monitor_row(run_dir, *args) -> dict:
    """The one row of a run directory; asserts that Slurm answered (no notes)."""
    report = monitor_report(run_dir, *args)
    assert report["notes"] == [], report["notes"]
    (row,) = report["runs"]
    return row


def sacct_core_hours(job_id: str) -> float:
    """Elapsed x allocated CPUs over every instance of the job (requeues included), as accounting has it."""
    out = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-o", "ElapsedRaw,NCPUS", "-j", job_id],
                         capture_output=True, text=True, timeout=30).stdout
    return sum(int(e) * int(c) for e, c in (line.split("|") for line in out.split()) if e and c) / 3600.0
