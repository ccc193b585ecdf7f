"""The results recorder, registered in the controlling process only (the one process under ``-n N``).

It writes each case's record to ``cases.jsonl`` as its report arrives, the
run configuration to ``run.json`` once, ``selection.json`` when the items are
known, and ``summary.json`` at the end; then it calls
``pytest_pitfalls_run_finished`` so the report can be rendered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.plugin.collection import case_identity
from harness.plugin.fixtures import CONFIG_PROPERTY, RECORD_PROPERTY
from harness.plugin.options import STATE, dataset_of
from harness.records import (
    CASES_FILE,
    RUN_FILE,
    SELECTION_FILE,
    SUMMARY_FILE,
    CaseLog,
    CaseRecord,
    latest_per_case,
    read_cases,
    read_run_config,
    run_folder,
    write_run_config,
    write_summary,
)


class ResultsRecorder:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.options = config.stash[STATE].options
        self.case_log: CaseLog | None = None
        self.run_dir: Path | None = None
        self.summary: dict[str, Any] | None = None
        self.config_written = False
        self.selection_written = False

    def _log(self) -> CaseLog:
        if self.case_log is None:
            o = self.options
            self.run_dir = run_folder(Path(o.results_dir), o.run_name, o.editor, o.model, o.mle)
            self.case_log = CaseLog(self.run_dir / CASES_FILE)
        return self.case_log

    def _write_selection(self, splits: list[str]) -> None:
        """``selection.json``: how many cases of each split were selected, so a report can tell an interrupted run."""
        if self.selection_written or not splits:
            return
        self._log()
        expected: dict[str, int] = {}
        for split in splits:
            expected[split] = expected.get(split, 0) + 1
        (self.run_dir / SELECTION_FILE).write_text(json.dumps({"expected": expected}), encoding="utf-8")
        self.selection_written = True

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        identities = [case_identity(item) for item in session.items]
        self._write_selection([i["split"] for i in identities if i])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # Under -n N the controller collects nothing itself; every worker reports the node ids it will run (after -k/-m).
        # Each id ends in "[<case id>]"; the dataset says which split a case id belongs to.
        if self.selection_written:
            return
        split_of = {case.case_id: case.split for case in dataset_of(self.config).all_cases()}
        splits = [split_of[nodeid[nodeid.rindex("[") + 1 : -1]] for nodeid in ids
                  if nodeid.endswith("]") and "[" in nodeid and nodeid[nodeid.rindex("[") + 1 : -1] in split_of]
        self._write_selection(splits)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = dict(report.user_properties)
        if report.when == "call" and RECORD_PROPERTY in properties:
            self._write_config(properties.get(CONFIG_PROPERTY))
            self._log().write(CaseRecord.from_dict(json.loads(properties[RECORD_PROPERTY])))
            return
        identity = case_identity(report)
        if identity and RECORD_PROPERTY not in properties and report.failed and report.when in ("setup", "call"):
            self._log().write(CaseRecord(**identity, status="error", error=_one_line(report), worker=_worker_of(report)))

    def _write_config(self, config_json: str | None) -> None:
        if self.config_written or not config_json:
            return
        self._log()
        write_run_config(self.run_dir, json.loads(config_json))
        self.config_written = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.case_log is None:
            return
        self.case_log.close()
        if not (self.run_dir / RUN_FILE).is_file():  # no case reached the editor: say what was asked
            o = self.options
            write_run_config(self.run_dir, {"model": o.model, "editor": o.run_label, "seed": o.seed, "mle": o.mle,
                                            "dataset_dir": self.config.stash[STATE].dataset_root, "limit": o.limit})
        records = latest_per_case(read_cases(self.case_log.path))  # a re-used run folder may hold earlier lines
        self.summary = write_summary(self.run_dir, records, read_run_config(self.run_dir))
        self.config.hook.pytest_pitfalls_run_finished(config=self.config, run_dir=self.run_dir, summary=self.summary)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.summary:
            return
        terminalreporter.section("knowledge-editing pitfalls")
        for split, info in self.summary["splits"].items():
            terminalreporter.write_line(f"{split}: {info['n']} cases, {info['pitfalls']} with the pitfall, {info['errors']} errors")
        errors_only = {r.split for r in latest_per_case(read_cases(self.run_dir / CASES_FILE)) if not r.ok} - set(self.summary["splits"])
        for split in sorted(errors_only):
            terminalreporter.write_line(f"{split}: 0 cases scored, every case an error")
        terminalreporter.write_line(f"results: {self.run_dir / CASES_FILE}  summary: {self.run_dir / SUMMARY_FILE}")


def _worker_of(report: pytest.TestReport) -> str:
    node = getattr(report, "node", None)  # xdist sets the worker's node on reports it forwards
    return str(getattr(node, "gateway", None) and node.gateway.id or "")


def _one_line(report: pytest.TestReport) -> str:
    text = str(report.longrepr) if report.longrepr else "error"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E ")]
    return (errors[-1][2:].strip() if errors else lines[-1])[:500]
