"""The paper's published numbers (docs/paper-results.md), to show beside ours for runs in the paper's setting."""

from __future__ import annotations

from pathlib import Path

from pitfalls_benchmark.paper_runs import PAPER_MODELS
from pitfalls_benchmark.splits import NOT_IN_PAPER, SPLITS


def _paper_columns(benchmark: str) -> tuple[str, ...]:
    """The paper's column titles of a benchmark, in the splits table's order (our JS columns left out)."""
    return tuple(title for split in SPLITS.values() if split.benchmark == benchmark
                 for metric, title in split.columns if metric not in NOT_IN_PAPER)


CONFLICT_COLUMNS = _paper_columns("conflict")
ROUND_COLUMNS = _paper_columns("round")

_CONFLICT = """
GPT2-XL FT    82.56 78.88 70.86 80.28 15.20 71.11 75.45 57.65 64.28 88.75
GPT2-XL MEND  98.40 91.04 60.01 88.89 15.32 60.50 84.85 81.35 43.45 72.09
GPT2-XL ROME  99.96 99.76 96.92 65.92  0.00 -0.65 71.70 38.70 37.04 69.55
GPT2-XL MEMIT 79.24 83.88 32.29 51.44  2.08 -1.60 57.15 29.40 -1.50 24.63
GPT-J   FT    100.0 100.0 99.90 99.60  4.16 97.20 96.68 88.92 88.98 89.97
GPT-J   MEND  100.0 95.88 82.41 88.92  6.40 60.72 83.04 73.52 63.99 42.95
GPT-J   ROME  100.0 99.80 94.25 56.84  0.00  0.06 77.60 29.24 39.27 81.02
GPT-J   MEMIT 100.0 99.64 88.91 55.16  0.00 -1.18 75.48 49.28 28.78 64.51
"""
_ROUND = """
GPT2-XL FT        89.50 6.47 74.47 72.24 90.06 11.38 80.83 80.82
GPT2-XL MEND      78.22 6.48 87.86 86.88 80.50  9.73 90.56 89.36
GPT2-XL ROME      99.82 7.78 67.41 64.60 99.86 14.86 74.38 73.68
GPT2-XL MEMIT     86.44 5.94 49.98 45.36 88.12 10.29 53.38 50.12
GPT2-XL MEMIT+MLE 83.62 3.05  4.66  1.72 86.64  2.67  2.67  1.12
GPT-J   FT        99.96 9.59 96.43 96.56 100.0 16.12 97.48 97.32
GPT-J   MEND      99.44 8.55 90.96 90.68 99.12 14.35 87.64 86.56
GPT-J   ROME      99.66 6.91 67.35 65.56 99.80 13.95 78.98 77.60
GPT-J   MEMIT     99.52 6.44 56.91 53.52 99.72 13.50 72.03 70.44
GPT-J   MEMIT+MLE 93.96 2.11  2.48  0.80 80.34  2.72  3.84  1.12
"""


def _parse(text: str, columns: tuple[str, ...]) -> dict[tuple[str, str], dict[str, float]]:
    table = {}
    for line in text.strip().splitlines():
        model, method, *values = line.split()
        table[(model, method)] = dict(zip(columns, map(float, values)))
    return table


PUBLISHED = {**_parse(_CONFLICT, CONFLICT_COLUMNS)}
for key, values in _parse(_ROUND, ROUND_COLUMNS).items():
    PUBLISHED.setdefault(key, {}).update(values)


def published_row(model: str, editor: str) -> dict[str, float]:
    """The paper's values for this model and editor (``memit+MLE`` -> ``MEMIT+MLE``), or none."""
    paper_model = PAPER_MODELS.get(Path(model.rstrip("/")).name.lower())
    return PUBLISHED.get((paper_model, editor.upper()), {}) if paper_model else {}
