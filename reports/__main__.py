"""``python -m reports RUN_DIR [RUN_DIR ...] [-o FILE]``: one HTML report of several runs, grouped by model and editor.

``python -m reports merge OUT SHARD_DIR ...`` merges the run folders of ``--shard K/N`` runs into one (reports/merge.py).
``python -m reports lifelong RUN_DIR ...`` prints, for ``--sequential`` runs, each curve's first and last bin.
``python -m reports table RUN_DIR ...`` prints the paper's Tables 1 and 2 as markdown, one row per run.
``python -m reports generation RUN_DIR ...`` prints teacher-forced against generated verdicts (``--generation``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.records import CASES_FILE, RUN_FILE, SELECTION_FILE, SUMMARY_FILE
from reports.render import render_report
from reports.runs import Run, RunFolderError, load_run

RUN_FILES = (CASES_FILE, RUN_FILE, SUMMARY_FILE, SELECTION_FILE)


def _load_runs(folders: list[str]) -> list[Run] | None:
    """The runs, each line they left out printed as a note; None (the error printed) when one cannot be read."""
    try:
        runs = [load_run(folder) for folder in folders]
    except RunFolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    for notice in (n for run in runs for n in run.notices):
        print(f"note: {notice}", file=sys.stderr)
    return runs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:
        from reports.merge import main as merge_main

        return merge_main(argv[1:])
    if argv[:1] in (["lifelong"], ["table"], ["generation"]):
        from reports.lifelong import lifelong_table
        from reports.tables import generation_table, markdown_tables

        print_table = {"lifelong": lifelong_table, "table": markdown_tables, "generation": generation_table}[argv[0]]
        if len(argv) == 1:
            print(f"usage: python -m reports {argv[0]} RUN_DIR [RUN_DIR ...]", file=sys.stderr)
            return 2
        runs = _load_runs(argv[1:])
        if runs is None:
            return 2
        print(print_table(runs))
        return 0
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    parser.add_argument("runs", nargs="+", help="run folders (each holds cases.jsonl)")
    parser.add_argument("-o", "--output", help="HTML file to write (default: report.html in the run folder, or here for several runs)")
    args = parser.parse_args(argv)
    out = Path(args.output) if args.output else (Path(args.runs[0]) / "report.html" if len(args.runs) == 1 else Path("report.html"))
    if any(out.resolve() == (Path(folder) / name).resolve() for folder in args.runs for name in RUN_FILES) or out.is_dir():
        print(f"error: -o {out}: is a folder or a file of a run it reads; write the report elsewhere", file=sys.stderr)
        return 2
    runs = _load_runs(args.runs)
    if runs is None:
        return 2
    path = render_report(runs, out)
    print(f"report: {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
