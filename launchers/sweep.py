#!/usr/bin/env python
"""Run a grid of training configs as ONE Slurm job array (`collect` refreshes its results table).

Thin wrapper; the logic lives in textgan.launch.sweep_cmd. Same as `textgan sweep ...`.
Run `python launchers/sweep.py --help` for the options.
"""

import os
import sys

# Runnable from a checkout without installing: put the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from textgan.launch.sweep_cmd import main as sweep_main  # noqa: E402

PROG = "launchers/sweep.py"


def main(argv=None) -> int:
    return sweep_main(argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
