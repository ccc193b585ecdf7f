"""Wall time and cases per minute of the same pytest run under ``-n 1``, ``-n 2``, ... on this machine.

    python -m benchmarks.workers --model gemma3-270m --editor rome --limit 2 --workers 1 2

Each row is one ``pytest suites/ --editor E --limit L --record-only -n N`` in
a fresh results folder, with the on-disk caches warm (one untimed ``-n 0``
run of one case fills them first), so the rows differ only in the workers.
Under ``-n N`` the plugin gives each worker ``cores // N`` torch threads; the
wall time includes every worker's model load. The last column checks that
the runs agree: the largest relative difference of any metric from the first row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pytest_run(args: argparse.Namespace, results: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "pytest", str(REPO / "suites"), "-q", "-p", "no:cacheprovider", "--record-only",
           "--editor", args.editor, "--model", args.model, "--results-dir", str(results), "--run-name", "run", *extra]
    cmd += ["--dataset-dir", args.dataset_dir] if args.dataset_dir else []
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"pytest failed ({proc.returncode}): {proc.stdout.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def metrics_of(folder: Path) -> dict[str, dict[str, float]]:
    return {r["case_id"]: r["metrics"] for r in map(json.loads, (folder / "run" / "cases.jsonl").read_text().splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--editor", default="rome")
    parser.add_argument("--limit", type=int, default=2, help="cases per split (five splits)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dataset-dir", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pytest_run(args, Path(tmp) / "warm", ["--limit", "1", "-k", "easy"])
        for n in args.workers:
            folder = Path(tmp) / f"n{n}"
            wall = pytest_run(args, folder, ["--limit", str(args.limit), "-n", str(n)])
            rows.append((n, wall, metrics_of(folder)))
            print(f"measured -n {n}: {wall:.0f} s", file=sys.stderr, flush=True)
    first = rows[0][2]
    print(f"model {args.model}, editor {args.editor}, {args.limit} cases per split, {os.cpu_count()} cores")
    print("| -n | cases | wall s | cases/min | speed-up vs first row | largest metric difference |")
    print("|---|---|---|---|---|---|")
    for n, wall, metrics in rows:
        gaps = [abs(metrics[c][k] - v) / max(abs(v), 1e-6) for c, m in first.items() for k, v in m.items() if c in metrics]
        print(f"| {n} | {len(metrics)} | {wall:.0f} | {60 * len(metrics) / wall:.2f} | {rows[0][1] / wall:.2f}x | {max(gaps, default=0):.1e} |")


if __name__ == "__main__":
    main()
