"""Hooks the plugin calls, for plugins above it (the report) to implement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def pytest_pitfalls_run_finished(config: pytest.Config, run_dir: Path, summary: dict[str, Any]) -> None:
    """Called in the controlling process after ``summary.json`` of a run folder was written."""
