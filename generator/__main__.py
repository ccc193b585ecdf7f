"""``python -m generator OUT ...``: the same as ``python -m harness.generate``."""

import sys

from generator.cli import main

sys.exit(main())
