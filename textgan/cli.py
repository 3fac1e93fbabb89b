"""The `textgan` command: one entry point, one subcommand per capability.

Subcommands delegate to the module that owns the capability; this file only routes.
"""

import sys

# name -> (module, help); modules expose main(argv) -> int
SUBCOMMANDS = {
    "shards": ("textgan.data.build_cli", "build, verify or merge WebDataset shards (COCO 2014, shapes)"),
    "export": ("textgan.export_cli", "write a run's G_ema and config as a standalone file (no DeepSpeed needed)"),
    "eval": ("textgan.eval_cli", "measure FID/KID/IS, CLIP score, diversity or shapes alignment of a run's G_ema"),
}


def _usage() -> str:
    lines = ["usage: textgan <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `textgan <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from textgan import __version__

        print(f"textgan {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"textgan: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module.main(rest, prog=f"textgan {name}")


if __name__ == "__main__":
    sys.exit(main())
