"""A run folder as the report reads it: its configuration, its latest record per case, and what is missing.

Works on an interrupted run too: the summary is recomputed from ``cases.jsonl``
(``summary.json`` may not exist yet), and ``selection.json``, written when the
items were collected, says how many cases each split should have.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.results import SPLIT_ORDER, latest_per_case, read_cases, summarize

SELECTION_FILE = "selection.json"


class RunFolderError(ValueError):
    """A folder that holds no run; the message names it."""


@dataclass
class Run:
    folder: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]  # the latest record per case, in the order written
    splits: dict[str, Any]  # harness.results.summarize of the records
    expected: dict[str, int] = field(default_factory=dict)  # split -> cases selected
    finished: bool = False  # summary.json was written at the end of the session

    @property
    def model(self) -> str:
        return str(self.config.get("model", "?"))

    @property
    def editor(self) -> str:
        return str(self.config.get("editor", "?"))

    @property
    def label(self) -> str:
        return f"{self.editor} · {self.folder.name}"

    def incomplete_splits(self) -> dict[str, str]:
        """Split -> why it is incomplete (finished fewer cases than selected, or errors)."""
        done = {s: sum(1 for r in self.records if r.get("split") == s) for s in SPLIT_ORDER}
        reasons = {}
        for split in SPLIT_ORDER:
            wanted = self.expected.get(split, 0)
            if done[split] < wanted:
                reasons[split] = f"{done[split]} of {wanted} cases finished"
            errors = sum(1 for r in self.records if r.get("split") == split and r.get("status") == "error")
            if errors:
                reasons[split] = (reasons.get(split, "") + f"; {errors} errors").lstrip("; ")
        return reasons


def load_run(folder: str | Path) -> Run:
    folder = Path(folder)
    cases = folder / "cases.jsonl"
    if not cases.is_file():
        raise RunFolderError(f"{folder}: no cases.jsonl (not a results folder of the harness)")
    records = latest_per_case(read_cases(cases))
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    config = summary.get("config") or next((r["config"] for r in records if r.get("config")), {})
    selection_path = folder / SELECTION_FILE
    expected = json.loads(selection_path.read_text(encoding="utf-8")).get("expected", {}) if selection_path.is_file() else {}
    return Run(folder, config, records, summarize(records), expected, finished=summary_path.is_file())
