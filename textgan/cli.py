"""The `textgan` command (also `python -m textgan`): one entry point, one subcommand per capability.

Subcommands delegate to the module that owns the capability, imported only once chosen: this file only
routes, so `textgan --help` and `textgan <command> --help` never load torch. A module exposes
main(argv, prog) -> int and builds its parser without torch. Later commands (search, monitor)
are one more SUBCOMMANDS entry each.
"""

import argparse
import importlib
import os
import sys

# name -> (module exposing main(argv, prog), one-line help), in the order `textgan --help` lists them
SUBCOMMANDS = {
    "train": ("textgan.launch.train_cmd", "submit a training job to Slurm, or run it here with --local "
                                          "(= python launchers/submit.py)"),
    "sweep": ("textgan.launch.sweep_cmd", "run a grid of configs as one Slurm job array; `sweep collect DIR` "
                                          "tabulates it (= python launchers/sweep.py)"),
    "shards": ("textgan.data.building.cli", "build, verify, merge or index WebDataset shards (COCO 2014, shapes, img2dataset) "
                                         "(= python shards/build.py)"),
    "export": ("textgan.export_cli", "write a run's G_ema and config as a standalone file (no DeepSpeed needed)"),
    "eval": ("textgan.eval_cli", "measure FID/KID/IS, CLIP score, diversity or shapes alignment of a run's G_ema"),
    "generate": ("textgan.infer.generate_cmd", "images of prompts x seeds from a run, checkpoint or exported file "
                                               "(PNGs, grid, generation.json)"),
    "monitor": ("textgan.monitor.cli", "what each run is doing: progress, speed, ETA, attempts, heartbeat, metrics "
                                       "(from its run directory)"),
    "search": ("textgan.launch.search_cmd", "the best images for prompts: GA / CMA-ES search over latents vs "
                                            "best-of-N, with a held-out verifier; `search collect DIR` merges parts"),
}


def make_parser() -> argparse.ArgumentParser:
    from textgan import __version__

    p = argparse.ArgumentParser(prog="textgan", description="Text-to-image GANs trained at cluster scale.",
                                epilog="Run `textgan COMMAND --help` for the options of a command.")
    p.add_argument("-V", "--version", action="version", version=f"textgan {__version__}")
    # One empty parser per command, for the list in --help and the error naming an unknown one; each
    # command parses its own options in its module.
    commands = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_, help_) in SUBCOMMANDS.items():
        commands.add_parser(name, help=help_, add_help=False)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The top level reads the options before the command and the command itself; everything after the
    # command is that command's (so `textgan train --help` is train's help, not this one).
    at = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    parser = make_parser()
    try:
        args, unknown = parser.parse_known_args(argv[:at + 1])
        if unknown:  # named before "a command is required": `textgan --bogus` is about --bogus
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        if args.command is None:
            parser.error(f"a command is required: {', '.join(SUBCOMMANDS)}")
    except SystemExit as e:  # --help, --version (0) or a usage error (2)
        return int(e.code or 0)
    name = args.command
    module = importlib.import_module(SUBCOMMANDS[name][0])
    try:
        return module.main(argv[at + 1:], prog=f"textgan {name}")
    except SystemExit as e:  # a command's argparse: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 1 if e.code else 0
    except BrokenPipeError:  # `textgan monitor | head`: the reader left; stop quietly as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it


if __name__ == "__main__":
    sys.exit(main())
