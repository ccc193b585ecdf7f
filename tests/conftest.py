"""Shared fixtures for the harness's own tests: tiny models, a cache folder, the published data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import REPO

PUBLISHED = Path(os.environ.get("PITFALLS_DATA", REPO.parent / "shared" / "pitfalls-data"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's cache when set (CI sets it), else one folder for this test session."""
    from pitfalls_editkit.cache import ENV_CACHE_DIR

    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR])
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def published() -> Path:
    if not (PUBLISHED / "GPT2-XL").is_dir():
        pytest.skip(f"published data not found at {PUBLISHED} (set PITFALLS_DATA)")
    return PUBLISHED


@pytest.fixture(scope="session")
def tiny_loader(cache_dir: Path):
    """Load a tiny model by name (fresh object each call)."""
    import torch

    from pitfalls_editkit.models import load_model

    def load(name: str = "tiny-gpt2"):
        return load_model(name, torch.device("cpu"), cache_dir=cache_dir)

    return load


# The quick loop (-m "not slow") runs each architecture-parametrized test on these two (GPT-2's Conv1D layout and a
# Llama-style model); the full loop runs it on every tiny model.
QUICK_ARCHITECTURES = ("tiny-gpt2", "tiny-llama")
OTHER_ARCHITECTURES = ("tiny-gptj", "tiny-gemma3")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Other architectures' parametrizations are ``slow``; the longest tests (``slow``) first, so that under ``-n 2``
    they start at once and overlap the rest."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if any(value in OTHER_ARCHITECTURES for value in params.values() if isinstance(value, str)):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
