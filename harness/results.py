"""Results on disk: ``cases.jsonl`` written as cases finish, ``summary.json`` at the end.

Only the controlling pytest process writes (under xdist the workers send each
case's record with its test report), so lines never interleave.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from harness import metrics as M
from harness.datasets import CONFLICT_SPLITS, ROUND_SPLITS
from harness.runner import SPLIT_METRICS

SPLIT_ORDER = (*CONFLICT_SPLITS, *ROUND_SPLITS)


def run_folder(results_dir: Path, run_name: str | None, editor: str, model: str, mle: bool) -> Path:
    """``<results-dir>/<run>``; by default a timestamped name with model and editor."""
    if not run_name:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        label = f"{editor}+mle" if mle else editor
        run_name = f"{stamp}-{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(model).name or model)}-{label}"
    folder = results_dir / run_name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class CaseLog:
    """Append-only ``cases.jsonl``: one line per finished case, flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._handle = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._handle.write(json.dumps(record, ensure_ascii=False, allow_nan=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_cases(path: Path) -> list[dict[str, Any]]:
    """Records of a (possibly interrupted) run; a torn last line is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def latest_per_case(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per case id, the last written (a resumed or repeated run appends)."""
    return list({r.get("case_id"): r for r in records}.values())


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per split: n, pitfall count, and every metric in % with its 95% interval."""
    scored = [r for r in records if r.get("status") == "ok"]
    summary: dict[str, Any] = {}
    if not scored:
        return summary
    frame = pd.DataFrame([{"split": r["split"], **r["metrics"]} for r in scored])
    for split in SPLIT_ORDER:
        rows = frame[frame["split"] == split]
        if rows.empty:
            continue
        summary[split] = {
            "n": int(len(rows)),
            "errors": sum(1 for r in records if r.get("split") == split and r.get("status") == "error"),
            "pitfalls": sum(1 for r in scored if r["split"] == split and r["pitfall"]),
            "metrics": {name: M.aggregate(name, rows[name].tolist()) for name in SPLIT_METRICS[split]},
        }
    return summary


def git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "pandas": pd.__version__}


def write_summary(folder: Path, records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    summary = {"config": config, "splits": summarize(records)}
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False, default=_nan_safe), encoding="utf-8")
    return summary


def _nan_safe(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)
