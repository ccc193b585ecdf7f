"""``python -m harness.generate``: kept as the documented spelling; the generator lives in ``generator/``."""

import sys

from generator.cli import main

if __name__ == "__main__":
    sys.exit(main())
