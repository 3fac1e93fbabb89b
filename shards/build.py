#!/usr/bin/env python
"""Shard builder: COCO 2014 or the built-in captioned-shapes data -> WebDataset shards.

Thin wrapper; the logic lives in textgan.data. Same as `textgan shards ...`.
Run `python shards/build.py --help` for the commands.
"""

import os
import sys

# Runnable from a checkout without installing: put the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from textgan.data.building.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="shards/build.py"))
