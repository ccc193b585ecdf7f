"""``python -m generator OUT ...``: generate a dataset folder (generator/cli.py)."""

import sys

from generator.cli import main

if __name__ == "__main__":
    sys.exit(main())
