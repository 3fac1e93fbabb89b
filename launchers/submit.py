#!/usr/bin/env python
"""Submit a textgan training job: on Slurm through submitit, or on this machine with --local.

Thin wrapper; the logic lives in textgan.launch.train_cmd. Same as `textgan train ...`.
Run `python launchers/submit.py --help` for the options.
"""

import os
import sys

# Runnable from a checkout without installing: put the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from textgan.launch.train_cmd import main as train_main  # noqa: E402

PROG = "launchers/submit.py"


def main(argv=None) -> int:
    return train_main(argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
