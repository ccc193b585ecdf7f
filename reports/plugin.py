"""The report's pytest plugin (``pytest11`` entry point ``pitfalls-report``): after every run, the paper's
tables on the terminal and ``report.html`` in the run folder.

It sits above the harness: it implements the harness's ``pytest_pitfalls_run_finished``
hook, so the harness never imports the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

_REPORT = pytest.StashKey[dict[str, Any]]()


@pytest.hookimpl(optionalhook=True)
def pytest_pitfalls_run_finished(config: pytest.Config, run_dir: Path, summary: dict[str, Any]) -> None:
    state: dict[str, Any] = {"summary": summary, "path": None, "error": None}
    try:
        from reports.render import render_report

        state["path"] = render_report([run_dir], run_dir / "report.html")
        from reports.lifelong import first_and_last_bins, is_sequential
        from reports.runs import load_run

        run = load_run(run_dir)
        state["lifelong"] = first_and_last_bins(run.records) if is_sequential(run) else {}
    except Exception as exc:  # the results are safe on disk; a report problem must not hide them
        state["error"] = f"{type(exc).__name__}: {exc}"
    config.stash[_REPORT] = state


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(_REPORT, None)
    if not state:
        return
    from reports.tables import paper_tables

    summary = state["summary"]
    cfg = summary.get("config", {})
    terminalreporter.section("knowledge-editing pitfalls: tables")
    if summary["splits"]:
        terminalreporter.write_line(paper_tables(summary["splits"], f"{cfg.get('model', '?')} {cfg.get('editor', '?')}"))
    for split, (first, last) in (state.get("lifelong") or {}).items():
        terminalreporter.write_line(f"lifelong {split}: pitfall rate {first.value:.1f}% (n={first.n}) at edits {first.low_edge}-"
                                    f"{first.high_edge}, {last.value:.1f}% (n={last.n}) at edits {last.low_edge}-{last.high_edge}")
    if state["path"]:
        terminalreporter.write_line(f"report: {state['path']}")
    elif state["error"]:
        terminalreporter.write_line(f"report not written: {state['error']}")
