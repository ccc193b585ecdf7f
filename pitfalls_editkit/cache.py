"""Where the harness keeps what is expensive to recompute, safely shared by workers.

Dequantized models, second-moment statistics and context templates are
written once under the cache folder. Several pytest-xdist workers may ask for
the same file at the same moment: a file lock serialises the writers and the
file appears atomically (written aside, then renamed).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

ENV_CACHE_DIR = "PITFALLS_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$PITFALLS_CACHE_DIR``, else ``~/.cache/pitfalls-harness``."""
    return Path(os.environ.get(ENV_CACHE_DIR, Path.home() / ".cache" / "pitfalls-harness")).expanduser()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an inter-process lock tied to ``path`` (the lock file sits beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield


def atomic_replace(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached_tensors(path: Path, compute: Any) -> dict[str, torch.Tensor]:
    """Load a dict of tensors from ``path``, computing and saving it once if absent."""
    with locked(path):
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True)
        value = compute()
        atomic_replace(path, lambda tmp: torch.save(value, tmp))
        return value


def cached_json(path: Path, compute: Any) -> Any:
    """Load JSON from ``path``, computing and saving it once if absent."""
    with locked(path):
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        value = compute()
        atomic_replace(path, lambda tmp: Path(tmp).write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8"))
        return value
