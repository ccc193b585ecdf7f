"""Where a command may write: never a folder it reads, one inside it, or one around it."""

from __future__ import annotations

from pathlib import Path


def overlaps(output: Path | str, source: Path | str) -> bool:
    """``output`` is ``source``, lies inside it, or holds it (paths resolved, ``~`` expanded)."""
    a, b = Path(output).expanduser().resolve(), Path(source).expanduser().resolve()
    return a == b or b in a.parents or a in b.parents
