"""A run folder as the report reads it: its configuration, its latest record per case, and what is missing.

Works on an interrupted run too: the summary is recomputed from ``cases.jsonl``
(``summary.json`` may not exist yet), and ``selection.json``, written when the
items were collected, says how many cases each split should have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editors.registry import editor_order
from harness.records import CASES_FILE, CaseRecord, summarize
from harness.run_files import RunFileError, counted_records, read_cases, read_run_config, read_selection, read_summary
from pitfalls_benchmark.splits import SPLIT_ORDER


class RunFolderError(ValueError):
    """A folder that holds no run, or a run file that cannot be used; the message names it."""


@dataclass
class Run:
    folder: Path
    config: dict[str, Any]
    records: list[CaseRecord]  # the latest record per case, in the order written
    splits: dict[str, Any]  # harness.records.summarize of the records
    expected: dict[str, int] = field(default_factory=dict)  # split -> cases selected
    finished: bool = False  # summary.json was written at the end of the session
    notices: list[str] = field(default_factory=list)  # lines of cases.jsonl left out, records outside the selection

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
    """The run in ``folder``, every file checked (:mod:`harness.run_files`); RunFolderError names what is wrong."""
    folder = Path(folder)
    if not (folder / CASES_FILE).exists():
        raise RunFolderError(f"{folder}: no {CASES_FILE} (not a results folder of the harness)")
    try:
        lines = read_cases(folder / CASES_FILE)
        summary = read_summary(folder)
        config = read_run_config(folder) or (summary or {}).get("config") or {}
        selection = read_selection(folder)
    except RunFileError as exc:
        raise RunFolderError(str(exc)) from None
    records, outside = counted_records(lines.latest(), selection, folder)
    notices = [n for n in (lines.notice(), outside) if n]
    return Run(folder, config, records, summarize(records), selection.expected if selection else {},
               finished=summary is not None, notices=notices)
