"""No value from a config or the command line reaches a shell unquoted: the batch script that --dry-run
prints (the one submitit hands to sbatch, textgan.launch.slurm.render_sbatch) is run with bash, with a
stub `srun` first on PATH, and no command planted in a value may run. A value that cannot be written
into the script safely (a newline ends a `#SBATCH` comment line and starts a command) exits 2."""

import os
import stat
import subprocess
import sys

import pytest

from launcher_util import created, run_main, submit_launcher, sweep_launcher
from test_train_e2e import ROOT, SUBMIT, TINY, shards  # noqa: F401  (shards is a fixture)
from textgan.errors import UsageError
from textgan.launch.slurm import SlurmRequest, render_sbatch

DEMO = os.path.join(ROOT, "configs", "demo.yaml")
PLANT = "PWNED"


def script_of(stdout: str) -> str:
    return stdout[stdout.index("#!/bin/bash"):]


def run_script_with_bash(script: str, workdir, check: bool = True) -> list:
    """Run the batch script in workdir with a stub srun that records its arguments; returns them."""
    os.makedirs(workdir, exist_ok=True)
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$SRUN_ARGS"\n')
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    path = workdir / "job.sh"
    path.write_text(script)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SRUN_ARGS=str(workdir / "srun-args"))
    done = subprocess.run(["bash", str(path)], cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 or not check, done.stderr
    return (workdir / "srun-args").read_text().splitlines() if (workdir / "srun-args").exists() else []


def assert_nothing_runs(code: int, stdout: str, tmp_path) -> None:
    """Where a script was printed anyway, bash must not run what a value planted in it."""
    if code == 0 and "#!/bin/bash" in stdout:
        run_script_with_bash(script_of(stdout), tmp_path / "bash-run", check=False)
    assert planted(tmp_path) == []


def planted(root) -> list:
    return [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files if PLANT in n
            and "'" not in n and "$" not in n and "`" not in n]  # the hostile outdir itself carries the word


def test_the_issue_desc_is_refused_with_exit_2_naming_the_key_and_the_characters(tmp_path):
    config = tmp_path / "evil.yaml"
    config.write_text(f'base: {DEMO}\ndesc: "demo\\ntouch {tmp_path}/{PLANT} #"\n')
    proc = subprocess.run([sys.executable, SUBMIT, "--config", str(config), "--outdir", str(tmp_path / "runs"),
                           "--set", f"data.shards={tmp_path / 'shapes'}", "--dry-run"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert_nothing_runs(proc.returncode, proc.stdout, tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert "config key 'desc'" in proc.stderr and "letters, digits and . _ + = -" in proc.stderr
    assert "#!/bin/bash" not in proc.stdout and created(tmp_path / "runs") == []


def test_a_config_file_name_becomes_a_safe_job_name(tmp_path, capsys):
    config = tmp_path / f"my demo;touch {PLANT}.yaml"
    config.write_text(f"base: {DEMO}\n")
    code, out, err = run_main(submit_launcher, ["--config", str(config), "--outdir", str(tmp_path / "runs"),
                                                "--set", f"data.shards={tmp_path / 'shapes'}", "--dry-run"], capsys)
    assert code == 0, err
    assert f"#SBATCH --job-name=textgan-my-demo-touch-{PLANT}\n" in out


def test_hostile_values_stay_quoted_when_bash_runs_the_script(tmp_path, capsys):
    outdir = tmp_path / f"runs $(touch {PLANT}1) `touch {PLANT}2`; touch {PLANT}3 '"
    hostile = ["--partition", f"gpu;touch {PLANT}4", "--account", f"$(touch {PLANT}5)", "--qos", f"`touch {PLANT}6`",
               "--constraint", f"a100|v100&touch {PLANT}7", "--exclude", f"n1'; touch {PLANT}8; '",
               "--nodelist", f"node[1-2] && touch {PLANT}9", "--job-name", f"j\"; touch {PLANT}10 #",
               "--mem", "64G", "--sbatch", f"comment=$(touch {PLANT}11)", "--sbatch", f"mail-user=a'b;touch {PLANT}12"]
    code, out, err = run_main(submit_launcher, ["--config", DEMO, "--outdir", str(outdir), "--set",
                                                f"data.shards={tmp_path / 'shapes'}", "--dry-run", *hostile], capsys)
    assert code == 0, err
    script = script_of(out)
    srun_args = run_script_with_bash(script, tmp_path / "bash")
    assert planted(tmp_path) == []
    logs = os.path.join(str(outdir), "NNNNN-demo", "logs")
    assert srun_args[-1] == logs  # the path with its $( ), backquotes, ; and ' arrives as one argument
    assert f"#SBATCH --comment='$(touch {PLANT}11)'" in script


@pytest.mark.parametrize("option", ["--partition", "--account", "--qos", "--constraint", "--exclude", "--nodelist",
                                    "--job-name", "--sbatch", "--setup", "--outdir"])
@pytest.mark.parametrize("control", ["\n", "\r", "\x00"], ids=["newline", "carriage-return", "nul"])
def test_a_control_character_in_any_script_value_exits_2(tmp_path, capsys, option, control):
    value = f"x{control}touch {tmp_path}/{PLANT} #"
    if option == "--sbatch":
        value = f"comment={value}"
    if option == "--outdir":
        value = str(tmp_path / value)
    args = [option, value] + (["--outdir", str(tmp_path / "runs")] if option != "--outdir" else [])
    code, out, err = run_main(submit_launcher, ["--config", DEMO, "--set", f"data.shards={tmp_path / 'shapes'}",
                                                "--dry-run", *args], capsys)
    assert_nothing_runs(code, out, tmp_path)
    assert code == 2, out
    source = "the log folder (--outdir" if option == "--outdir" else option
    assert source in err and "control character" in err and "#!/bin/bash" not in out
    assert created(tmp_path / "runs") == []


def test_render_sbatch_itself_refuses_a_newline_however_the_request_was_made():
    request = SlurmRequest(nodes=1, tasks_per_node=1, gpus_per_node=0, time_min=60, signal_delay_s=30,
                           max_requeues=0, job_name=f"ok\ntouch {PLANT}")
    with pytest.raises(UsageError, match="--job-name .*control character"):
        render_sbatch(request, "/tmp/logs")
    request.job_name = "ok"
    with pytest.raises(UsageError, match="log folder .*control character"):
        render_sbatch(request, f"/tmp/logs\ntouch {PLANT}")


def test_a_sweep_array_script_with_a_hostile_grid_name_runs_nothing(tmp_path, capsys, shards):  # noqa: F811
    grid = tmp_path / f"g;touch {PLANT}13.yaml"
    grid.write_text("grid:\n  loss.r1_gamma: [1, 2]\n")
    sets = [x for kv in TINY + [f"data.shards={shards}"] for x in ("--set", kv)]
    code, out, err = run_main(sweep_launcher, ["--config", DEMO, "--grid", str(grid), "--outdir",
                                               str(tmp_path / "runs"), "--dry-run", *sets], capsys)
    assert code == 0, err
    script = script_of(out)
    assert f"#SBATCH --job-name=textgan-sweep-g-touch-{PLANT}13\n" in script
    run_script_with_bash(script, tmp_path / "bash")
    assert planted(tmp_path / "bash") == []
