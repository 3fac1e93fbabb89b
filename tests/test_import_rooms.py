"""The house's import rules, read from the source with `ast` (every import statement, including the ones
inside functions), so that a backward import fails here rather than in review:

- the config (config.py, its sections config_schema.py and its metrics section, config_metrics.py) imports no room
  above it: only the ground-floor modules errors.py, ranges.py and scaling.py;
- the ground-floor modules (errors, ranges, scaling, files, atomic, warn_once) import no other textgan module but errors;
- train/engines.py is the only module that imports deepspeed;
- networks and pure losses import neither torch.distributed nor deepspeed;
- no module imports another module's private (underscore) name;
- data/ imports no room above it, and its rooms follow the flow: sources know nothing of building or
  loading, building and loading know nothing of each other;
- augment/ (what D sees) imports only the data it decodes and errors;
- train/ and infer/ import nothing from launch/ (a notebook generates without the launcher);
- monitor/ imports neither torch nor the rooms that need it (it must start at once on a login node).
"""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "textgan")
CONFIG_ROOM = ("config.py", "config_schema.py", "config_metrics.py")
GROUND_FLOOR = ("errors.py", "ranges.py", "scaling.py", "files.py", "atomic.py", "warn_once.py")


def _modules() -> dict:
    """{path relative to textgan/: parsed tree} for every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    found[os.path.relpath(path, PACKAGE)] = ast.parse(f.read(), filename=path)
    return found


MODULES = _modules()


def _imports(tree, path: str) -> list:
    """[(absolute module, [names])] of every import statement in textgan/`path`; `import a.b` gives
    ("a.b", []), `from .layers import x` in nets/__init__.py gives ("textgan.nets.layers", ["x"])."""
    package = ["textgan"] + os.path.dirname(path).split(os.sep) if os.path.dirname(path) else ["textgan"]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            out.append((".".join(base + ([node.module] if node.module else [])), [a.name for a in node.names]))
    return out


def _textgan_imports(path: str) -> set:
    return {module for module, _ in _imports(MODULES[path], path) if module.split(".")[0] == "textgan"}


@pytest.mark.parametrize("name", CONFIG_ROOM)
def test_the_config_imports_no_room_above_it(name):
    assert _textgan_imports(name) <= {"textgan.errors", "textgan.ranges", "textgan.scaling", "textgan.config_metrics",
                                      "textgan.config_schema"}


@pytest.mark.parametrize("name", GROUND_FLOOR)
def test_the_ground_floor_modules_import_only_errors(name):
    assert _textgan_imports(name) <= {"textgan.errors"}


def test_only_the_engines_module_imports_deepspeed():
    importers = sorted(path for path, tree in MODULES.items()
                       if any(module.split(".")[0] == "deepspeed" for module, _ in _imports(tree, path)))
    assert importers == [os.path.join("train", "engines.py")]


@pytest.mark.parametrize("room", ["nets", "losses"])
def test_networks_and_losses_know_nothing_of_ranks(room):
    for path, tree in MODULES.items():
        if path.startswith(room + os.sep):
            modules = {module for module, _ in _imports(tree, path)}
            assert not {m for m in modules if m.split(".")[0] == "deepspeed" or m.startswith("torch.distributed")}, path


def test_no_module_imports_a_private_name_of_another():
    private = [(path, module, name) for path, tree in MODULES.items() for module, names in _imports(tree, path)
               if module.startswith("textgan") for name in names
               if name.startswith("_") and not name.endswith("__")]  # dunders such as __version__ are public
    assert private == []


ABOVE_DATA = ("textgan.nets", "textgan.losses", "textgan.augment", "textgan.train", "textgan.metrics",
              "textgan.launch", "textgan.config", "textgan.runtime", "textgan.export", "textgan.cli", "textgan.infer")


def _in_room(prefix: str) -> list:
    return [path for path in MODULES if path.startswith(prefix)]


def test_data_imports_no_room_above_it():
    for path in _in_room("data" + os.sep):
        assert not {m for m in _textgan_imports(path) if m.startswith(ABOVE_DATA)}, path


@pytest.mark.parametrize("room, forbidden", [
    ("sources", ("building", "loading")), ("building", ("loading",)), ("loading", ("building", "sources"))])
def test_the_data_rooms_follow_the_flow(room, forbidden):
    paths = _in_room(os.path.join("data", room) + os.sep)
    assert paths, room
    for path in paths:
        bad = {m for m in _textgan_imports(path) if m.startswith(tuple(f"textgan.data.{f}" for f in forbidden))}
        assert not bad, path


def test_augment_imports_only_data_and_errors():
    for path in _in_room("augment" + os.sep):
        assert {m for m in _textgan_imports(path) if not m.startswith("textgan.augment")} <= {
            "textgan.data.decode", "textgan.errors"}, path


def test_training_imports_nothing_from_the_launch_room_above_it():
    """textgan/launch builds and submits jobs around textgan/train; the job itself never needs the launcher."""
    importers = sorted(path for path in MODULES if path.startswith("train" + os.sep)
                       if any(m == "textgan.launch" or m.startswith("textgan.launch.") for m in _textgan_imports(path)))
    assert importers == []


def test_inference_imports_nothing_from_the_launch_room():
    """textgan/infer is used from notebooks: loading a model and generating never need the job launcher."""
    paths = _in_room("infer" + os.sep)
    assert paths
    importers = sorted(path for path in paths
                       if any(m == "textgan.launch" or m.startswith("textgan.launch.") for m in _textgan_imports(path)))
    assert importers == []


def test_the_monitor_imports_no_torch_and_no_heavy_room():
    allowed_textgan = ("textgan.errors", "textgan.files", "textgan.atomic", "textgan.monitor", "textgan.metrics.history",
                       "textgan.train.heartbeat")
    for path, tree in MODULES.items():
        if path.startswith("monitor" + os.sep):
            for module, _ in _imports(tree, path):
                assert module.split(".")[0] not in ("torch", "numpy", "deepspeed", "submitit"), (path, module)
                if module.split(".")[0] == "textgan":
                    assert module.startswith(allowed_textgan), (path, module)
