"""Run the suites once per editor and render one report of all runs: the paper's comparison in one command.

    python -m reports.compare --editors rome ft memit memit+mle mend --limit 2 --out results/compare

Without ``--editors``: every shipped editor, and the +MLE variant of each batch editor.

Each editor (``NAME`` or ``NAME+mle``) runs as ``pytest suites/ --editor NAME [--mle] --record-only`` with the
options given here (``--model``, ``--dataset-dir``, ``--limit``, ``-k``), into ``OUT/<editor>``; then
``OUT/report.html`` combines them. A run that fails to start is reported and the others go on.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from editors.registry import SHIPPED, editor_class
from reports.render import render_report

REPO = Path(__file__).resolve().parents[1]


def default_editors() -> list[str]:
    """The findings set: every shipped editor, and the +mle variant of each one that edits batches."""
    labels = []
    for name in SHIPPED:
        labels.append(name)
        if editor_class(name).supports_batch:
            labels.append(f"{name}+mle")
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--editors", nargs="+", default=None, help="NAME or NAME+mle (default: every shipped editor, and +mle "
                        "for each batch editor)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--dataset-dir", default=None)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("-k", dest="keyword", default=None)
    parser.add_argument("--out", default="results/compare")
    parser.add_argument("--resume", action="store_true", help="go on with the runs in --out: skip the cases they hold")
    args = parser.parse_args(argv)
    if args.editors is None:
        args.editors = default_editors()
    out = Path(args.out)
    runs = []
    for spec in args.editors:
        name, _, flag = spec.partition("+")
        if flag not in ("", "mle"):
            parser.error(f"--editors {spec!r}: expected NAME or NAME+mle")
        cmd = [sys.executable, "-m", "pytest", str(REPO / "suites"), "--editor", name, "--record-only", "--limit", str(args.limit),
               "--results-dir", str(out), "--run-name", spec.replace("+", "-"), "-q", "-p", "no:cacheprovider"]
        cmd += ["--mle"] if flag else []
        cmd += ["--resume"] if args.resume else []
        cmd += ["--model", args.model] if args.model else []
        cmd += ["--dataset-dir", args.dataset_dir] if args.dataset_dir else []
        cmd += ["-k", args.keyword] if args.keyword else []
        print(f"== {spec}: {' '.join(cmd[3:])}", flush=True)
        proc = subprocess.run(cmd, cwd=REPO)
        run_dir = out / spec.replace("+", "-")
        if (run_dir / "cases.jsonl").is_file():
            runs.append(run_dir)
        else:
            print(f"== {spec}: no results (pytest exit status {proc.returncode})", file=sys.stderr)
    if not runs:
        print("error: no run produced results", file=sys.stderr)
        return 2
    report = render_report(runs, out / "report.html")
    print(f"report: {report.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
