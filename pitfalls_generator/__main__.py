"""``python -m pitfalls_generator OUT ...``: generate a dataset folder (pitfalls_generator/cli.py)."""

import sys

from pitfalls_generator.cli import main

if __name__ == "__main__":
    sys.exit(main())
