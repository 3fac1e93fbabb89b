"""`textgan export RUN_OR_CHECKPOINT --out FILE.pt`: the command line of textgan.export.

Apart from textgan/export.py so that parsing (and --help) needs no torch; the export itself loads it.
--out names the file written, not a directory, so it is not spelt --outdir.
"""

import argparse
import os
import sys

from textgan.errors import UsageError


def make_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Write G_ema and its config as a standalone file (loadable without DeepSpeed: "
                               "textgan.export.load_generator).")
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT",
                   help="a run directory (its newest complete checkpoint), its checkpoints/ directory, "
                        "or one checkpoint directory")
    p.add_argument("--out", required=True, metavar="FILE.pt", help="the file to write (replaced if it exists)")
    return p


def main(argv=None, prog: str = "textgan export") -> int:
    try:
        args = make_parser(prog).parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    from textgan.export import export_generator

    try:
        record = export_generator(args.run, args.out)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    size_mb = os.path.getsize(args.out) / 2**20
    print(f"exported G_ema ({record['arch']}, kimg {record['kimg']:g}, tick {record['tick']}) from {record['source']}")
    print(f"  to {args.out} ({size_mb:.1f} MiB)")
    print(f"  load: from textgan.export import load_generator; G, cfg = load_generator({args.out!r})")
    for warning in record["warnings"]:
        print(f"  warning: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
