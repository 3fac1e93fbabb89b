"""Run the launchers' main() in the test process: launchers/submit.py and sweep.py are scripts, not a
package; main(argv) is the same code path as the command line, minus the interpreter start."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launcher(name):
    """launchers/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(f"{name}_launcher", os.path.join(ROOT, "launchers", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


submit_launcher = launcher("submit")
sweep_launcher = launcher("sweep")


def run_main(module, argv, capsys):
    """(exit code, stdout, stderr) of module.main(argv)."""
    code = module.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def created(path) -> list:
    """What a command left in path (empty when path does not exist)."""
    return sorted(os.listdir(path)) if os.path.exists(path) else []
