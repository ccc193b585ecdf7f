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

from editors.registry import editor_order
from harness.records import (
    CASES_FILE,
    SELECTION_FILE,
    SUMMARY_FILE,
    CaseRecord,
    latest_per_case,
    read_cases,
    read_run_config,
    summarize,
)
from pitfalls_benchmark.splits import SPLIT_ORDER


class RunFolderError(ValueError):
    """A folder that holds no run; the message names it."""


@dataclass
class Run:
    folder: Path
    config: dict[str, Any]
    records: list[CaseRecord]  # the latest record per case, in the order written
    splits: dict[str, Any]  # harness.records.summarize of the records
    expected: dict[str, int] = field(default_factory=dict)  # split -> cases selected
    finished: bool = False  # summary.json was written at the end of the session

    @property
    def model(self) -> str:
        return str(self.config.get("model", "?"))

    @property
    def editor(self) -> str:
        return str(self.config.get("editor", "?"))

    @property
    def sort_key(self) -> tuple[str, tuple[int, str], str]:
        """Where the run stands in a report or table: by model, then the editors' shipped order (MLE after its editor)."""
        return (self.model, editor_order(self.editor), self.folder.name)

    @property
    def paper_setting(self) -> bool:
        return self.config.get("paper_setting") is True

    @property
    def paper_setting_note(self) -> str:
        """Empty for a run in the paper's setting; else what differs."""
        if self.paper_setting:
            return ""
        differs = self.config.get("paper_setting_differs")
        return "not the paper's setting: " + ("; ".join(map(str, differs)) if differs else "not recorded (an older run)")

    @property
    def label(self) -> str:
        return f"{self.editor} · {self.folder.name}"

    def incomplete_splits(self) -> dict[str, str]:
        """Split -> why it is incomplete (finished fewer cases than selected, or errors)."""
        done = {s: sum(1 for r in self.records if r.split == s) for s in SPLIT_ORDER}
        reasons = {}
        for split in SPLIT_ORDER:
            wanted = self.expected.get(split, 0)
            if done[split] < wanted:
                reasons[split] = f"{done[split]} of {wanted} cases finished"
            errors = sum(1 for r in self.records if r.split == split and not r.ok)
            if errors:
                reasons[split] = (reasons.get(split, "") + f"; {errors} errors").lstrip("; ")
        return reasons


def load_run(folder: str | Path) -> Run:
    folder = Path(folder)
    cases = folder / CASES_FILE
    if not cases.is_file():
        raise RunFolderError(f"{folder}: no {CASES_FILE} (not a results folder of the harness)")
    records = latest_per_case(read_cases(cases))
    summary_path = folder / SUMMARY_FILE
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    config = summary.get("config") or read_run_config(folder)
    selection_path = folder / SELECTION_FILE
    expected = json.loads(selection_path.read_text(encoding="utf-8")).get("expected", {}) if selection_path.is_file() else {}
    return Run(folder, config, records, summarize(records), expected, finished=summary_path.is_file())
