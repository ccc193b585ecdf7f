"""Scripts that print tables (run as ``python -m benchmarks.NAME``), and what they share."""

from __future__ import annotations

from pathlib import Path


def dataset_dir_or_default(given: str | None, cache: Path) -> str | Path:
    """``--dataset-dir`` if given, else the generated geography dataset (made once into the cache)."""
    if given is not None:
        return given
    from pitfalls_generator.cli import default_dataset_dir

    return default_dataset_dir(cache)
