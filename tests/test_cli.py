"""The `textgan` command surface as a user types it: every subcommand's --help answers without importing
torch, the top level lists the commands and refuses unknown ones, `textgan train`/`sweep` are the launchers'
twins (same output), old option spellings still work, and the launch flow's shared pieces."""

import os
import subprocess
import sys

import pytest

from textgan import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT)  # this checkout's textgan, not an installed one
HEAVY = ("torch", "deepspeed", "open_clip", "submitit")

# What each help prints first: its own usage line (the prog the user typed).
HELPS = {
    (): "usage: textgan [-h] [-V] COMMAND ...",
    ("train",): "usage: textgan train [-h] --config CONFIG",
    ("sweep",): "usage: textgan sweep [-h] [--config CONFIG] [--grid GRID]",
    ("sweep", "collect"): "usage: textgan sweep collect [-h] [--no-tensorboard] SWEEP_DIR",
    ("shards",): "usage: textgan shards [-h] {coco,shapes,verify,merge,index} ...",
    ("shards", "shapes"): "usage: textgan shards shapes [-h] --outdir OUT",
    ("export",): "usage: textgan export [-h] --out FILE.pt RUN_OR_CHECKPOINT",
    ("eval",): "usage: textgan eval [-h] [--metrics METRICS]",
    ("generate",): "usage: textgan generate [-h] [--prompt TEXT | --prompts FILE]",
    ("search",): "usage: textgan search [-h] [--prompt TEXT | --prompts FILE]",
    ("monitor",): "usage: textgan monitor [-h] [--watch [SECONDS]] [--json] [--html FILE]",
    ("search", "collect"): "usage: textgan search collect [-h] FOLDER",
}

PROBE = """
import json, sys
import textgan.cli
code = textgan.cli.main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in %r if m in sys.modules)}), file=sys.stderr)
""" % (HEAVY,)


def probe(*argv):
    """(exit code, stdout, {"code", "loaded"}) of textgan.cli.main(argv) in a fresh interpreter."""
    import json

    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=120)
    return proc.returncode, proc.stdout, json.loads(proc.stderr.strip().splitlines()[-1])


def textgan(*argv, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "textgan", *argv], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=300)


@pytest.mark.parametrize("command", list(HELPS), ids=lambda c: " ".join(c) or "textgan")
def test_every_help_prints_its_usage_without_importing_torch(command):
    code, out, report = probe(*command, "--help")
    assert (code, report["code"]) == (0, 0)
    assert out.startswith(HELPS[command]), out[:300]
    assert report["loaded"] == []  # parsing and help are instant: no torch, DeepSpeed, open_clip, submitit


def test_the_top_level_help_lists_every_command():
    from textgan.cli import SUBCOMMANDS

    out = textgan("--help").stdout
    listed = [line.split()[0] for line in out.split("commands:")[1].splitlines()[2:] if line.startswith("    ")
              and not line.startswith("     ")]
    assert listed == list(SUBCOMMANDS) == ["train", "sweep", "shards", "export", "eval", "generate", "monitor", "search"]


@pytest.mark.parametrize("module", [["-m", "textgan"], ["-m", "textgan.cli"]])
def test_version(module):
    proc = subprocess.run([sys.executable, *module, "--version"], capture_output=True, text=True, cwd=ROOT, env=ENV)
    assert proc.returncode == 0 and proc.stdout == f"textgan {__version__}\n"


@pytest.mark.parametrize("argv, message", [
    (["bogus"], "textgan: error: argument COMMAND: invalid choice: 'bogus' (choose from 'train', 'sweep', 'shards', "
                "'export', 'eval', 'generate', 'monitor', 'search')"),
    (["--bogus"], "textgan: error: unrecognized arguments: --bogus"),
    ([], "textgan: error: a command is required: train, sweep, shards, export, eval, generate, monitor, search"),
    (["train", "--config", "configs/demo.yaml", "--bogus"], "textgan train: error: unrecognized arguments: --bogus"),
    (["train"], "textgan train: error: the following arguments are required: --config"),
    (["sweep", "--dry-run"], "textgan sweep: error: the following arguments are required to submit a sweep: "
                             "--config, --grid"),
    (["shards", "shapes"], "textgan shards shapes: error: one of the arguments --outdir is required"),
    (["export", "RUN"], "textgan export: error: the following arguments are required: --out"),
])
def test_unknown_commands_and_bad_options_exit_2_naming_the_problem(argv, message):
    proc = textgan(*argv)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


def test_sweep_collect_of_a_directory_that_is_not_a_sweep_names_the_missing_sweep_json(tmp_path):
    proc = textgan("sweep", "collect", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr == f"textgan sweep collect: error: {tmp_path} has no sweep.json: not a sweep directory\n"
    # the option spelling of old scripts is the same command
    proc = textgan("sweep", "--collect", str(tmp_path))
    assert proc.returncode == 2 and "has no sweep.json" in proc.stderr


def test_textgan_train_prints_what_the_launcher_prints(tmp_path):
    """`textgan train` and `python launchers/submit.py` are one command: same checks, same dry run."""
    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    os.symlink(os.path.join(ROOT, "launchers"), tmp_path / "launchers")
    argv = ["--config", "configs/demo.yaml", "--dry-run", "--local"]
    new = textgan("train", *argv, cwd=tmp_path)
    old = subprocess.run([sys.executable, "launchers/submit.py", *argv], capture_output=True, text=True,
                         cwd=tmp_path, env=ENV, timeout=300)
    assert new.returncode == old.returncode == 0, new.stderr + old.stderr
    assert new.stdout == old.stdout
    assert "# world size 1 = 1 node(s) x 1 task(s)" in new.stdout
    assert f"# run dir: a new one, {tmp_path / 'runs'}/NNNNN-demo" in new.stdout
    assert sorted(os.listdir(tmp_path)) == ["configs", "launchers"]  # a dry run creates nothing


def test_a_bad_set_key_is_refused_the_same_way_by_both_spellings_with_the_prog_typed(tmp_path):
    argv = ["--config", os.path.join(ROOT, "configs", "demo.yaml"), "--outdir", str(tmp_path), "--dry-run",
            "--local", "--set", "batch_size=64"]
    new = textgan("train", *argv)
    old = subprocess.run([sys.executable, os.path.join(ROOT, "launchers", "submit.py"), *argv],
                         capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300)
    hint = "unknown config key 'batch_size'. Did you mean 'schedule.batch_size' or 'metrics.batch_size'?"
    assert (new.returncode, old.returncode) == (2, 2)
    assert new.stderr.startswith("textgan train: error: --set batch_size=64: ") and hint in new.stderr
    assert old.stderr.startswith("launchers/submit.py: error: --set batch_size=64: ") and hint in old.stderr


def test_resume_help_names_what_resume_accepts():
    out = textgan("train", "--help").stdout
    assert "--resume auto|RUN_DIR|CHECKPOINT" in out
    flat = " ".join(out.split())
    assert "RUN_DIR/checkpoints/<tag>" in flat and "from that very checkpoint" in flat


@pytest.mark.parametrize("spelling", ["--outdir", "--out"])
def test_the_builder_takes_outdir_and_still_the_old_out(tmp_path, spelling):
    out = tmp_path / "shards"
    proc = textgan("shards", "shapes", spelling, str(out), "--n", "12", "--resolution", "16", "--samples-per-shard",
                   "6", "--workers", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "samples written: 12 in 2 shards" in proc.stdout
    shards = sorted(name for name in os.listdir(out) if name.endswith(".tar"))
    assert shards == ["train-000000.tar", "train-000001.tar"] and os.path.isfile(out / "manifest.json")


def test_old_spellings_are_hidden_from_help():
    assert "--out " not in textgan("shards", "shapes", "--help").stdout
    eval_help = textgan("eval", "--help").stdout
    assert "--outdir DIR" in eval_help and "--out-dir" not in eval_help


def test_eval_takes_outdir_and_still_the_old_out_dir():
    from textgan.eval_cli import make_parser

    parser = make_parser("textgan eval")
    assert parser.parse_args(["RUN", "--outdir", "d1"]).out_dir == "d1"
    assert parser.parse_args(["RUN", "--out-dir", "d2"]).out_dir == "d2"
    assert parser.parse_args(["RUN"]).out_dir is None


# ---------------------------------------------------------------------- the shared submission flow


class Refusing:
    def submit(self, trainer):
        raise RuntimeError("sbatch: error: invalid partition specified: nope")


def test_a_refused_submission_removes_the_empty_run_dir_and_says_so(tmp_path, monkeypatch, capsys):
    from textgan.launch import slurm, submission

    run_dir = tmp_path / "00000-demo"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "logs" / "1_submitted.pkl").write_bytes(b"")  # what submitit leaves before sbatch answers
    monkeypatch.setattr(slurm, "make_executor", lambda *a, **k: Refusing())
    jobs = submission.submit_jobs("textgan train", "job", None, str(run_dir / "logs"), local=False,
                                  submit_all=lambda executor: [executor.submit(None)], fresh_dir=str(run_dir))
    assert jobs is None and not run_dir.exists()
    assert capsys.readouterr().err == ("textgan train: error: the job was not submitted: sbatch: error: invalid "
                                       "partition specified: nope\n")


def test_a_refused_submission_keeps_a_directory_that_holds_output(tmp_path, monkeypatch, capsys):
    from textgan.launch import slurm, submission

    sweep_dir = tmp_path / "00000-sweep-g"
    (sweep_dir / "000-a").mkdir(parents=True)
    (sweep_dir / "000-a" / "stats.jsonl").write_text("{}\n")  # a local point that already trained
    monkeypatch.setattr(slurm, "make_executor", lambda *a, **k: Refusing())
    assert submission.submit_jobs("textgan sweep", "sweep", None, str(sweep_dir / "logs"), local=True,
                                  submit_all=lambda executor: [executor.submit(None)],
                                  fresh_dir=str(sweep_dir)) is None
    assert (sweep_dir / "000-a" / "stats.jsonl").read_text() == "{}\n"
    assert "textgan sweep: error: the sweep was not submitted: " in capsys.readouterr().err


def test_the_follow_up_command_is_the_one_the_user_typed():
    from textgan.launch.submission import command_of

    assert command_of("launchers/sweep.py") == "python launchers/sweep.py"
    assert command_of("textgan sweep") == "textgan sweep"


def test_the_job_merges_the_validated_yaml_without_validating_again():
    """One validation per run, in the launcher: the job's config is the YAML it was given, typed; a value
    the launcher would refuse (a desc with a space) shows that the job does not check again."""
    from textgan.config import load_config, to_yaml
    from textgan.train.trainer import Trainer

    cfg = load_config(os.path.join(ROOT, "configs", "demo.yaml"), ["seed=7"])
    job_cfg = Trainer(to_yaml(cfg), "unused-run-dir").config()
    assert to_yaml(job_cfg) == to_yaml(cfg)
    assert job_cfg.seed == 7 and isinstance(job_cfg.schedule.batch_size, int)
    cfg.desc = "not checked here"
    assert Trainer(to_yaml(cfg), "unused-run-dir").config().desc == "not checked here"


# ---------------------------------------------------------------------- the README's `textgan` commands


def readme_textgan_commands() -> list:
    """Every `textgan ...` line of the README's bash blocks, as argument lists (comments dropped)."""
    import re
    import shlex

    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), flags=re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.startswith("textgan ")]


# need what only a finished run or sweep has (a sweep directory, a run to export): not runnable here
NEEDS_A_RUN = ("collect", "export", "eval", "generate", "search", "monitor")
RUNNABLE = [c for c in readme_textgan_commands() if c[1] not in NEEDS_A_RUN and "collect" not in c]


def test_the_readme_shows_textgan_train_and_sweep():
    assert {c[1] for c in RUNNABLE} >= {"train", "sweep", "--help", "--version"}


@pytest.mark.parametrize("command", RUNNABLE, ids=" ".join)
def test_a_readme_textgan_command_runs_as_printed(tmp_path, command):
    assert command[1] in ("--help", "--version") or "--dry-run" in command  # nothing here may train or submit
    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    env = dict(ENV, PATH=os.path.dirname(sys.executable))  # no sbatch: a dry run needs no Slurm
    proc = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = {"train": "# world size ", "sweep": " point(s) of ", "--help": "usage: textgan",
                "--version": f"textgan {__version__}"}[command[1]]
    assert expected in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["configs"]  # created nothing
