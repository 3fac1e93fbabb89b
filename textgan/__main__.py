"""`python -m textgan ...`: the same command as the `textgan` entry point (textgan.cli)."""

import sys

from textgan.cli import main

if __name__ == "__main__":
    sys.exit(main())
