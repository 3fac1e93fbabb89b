"""`--outdir`: the one spelling of "where this command writes its directory" across every command.

Commands used to spell it --out (shard builder) and --out-dir (eval); those spellings stay accepted,
hidden from --help, so that existing scripts keep working while help and README show one spelling.
Only argparse here: a command's parser must build without torch (`textgan <command> --help` is instant).
"""

import argparse


def add_outdir_option(container, help: str, dest: str = "outdir", old: tuple = (), default=None,
                      required: bool = False, metavar: str = "DIR") -> None:
    """Add --outdir to `container` (a parser or argument group), plus each old spelling in `old` as a hidden
    alias writing the same `dest`. required=True: one of them must be given (the error names --outdir only)."""
    # A required option with hidden aliases is a required mutually exclusive group: argparse then asks for
    # "one of the arguments --outdir", leaving the suppressed aliases out of the message and the usage line.
    target = container.add_mutually_exclusive_group(required=True) if required else container
    target.add_argument("--outdir", dest=dest, default=default, metavar=metavar, help=help)
    for spelling in old:
        target.add_argument(spelling, dest=dest, default=default, help=argparse.SUPPRESS)
