"""Cases per minute per editor and ``--case-batch K``, seconds per edit and peak memory, on one device.

    python -m benchmarks.throughput --model gemma3-270m --editors rome memit --case-batch 1 4 16 --cases 16

Each (editor, K) runs in a fresh process, so peak memory is that configuration's
(CUDA: ``torch.cuda.max_memory_allocated``; CPU: the process's peak resident
set). The cases are the first ``--cases`` of the published data in the suites'
order (the first N/5 of each split), run through the harness's own runner and
guard as ``--case-batch K`` runs them: on the first case of every K,
``Editor.prepare`` gets the K cases' first edits. The one-time work (model,
context templates, statistics) is done before the clock starts by one
throw-away edit, and every configuration scores the unedited model itself (no
shared on-disk cache), so the rows compare like with like. The last column is
the largest difference of any metric from the K = 1 run, absolute and
relative, and how many cases have the same pitfall verdict (batching must not
change results beyond float rounding).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import dataset_dir_or_default


def measure(model_name: str, editor_name: str, batch: int, n_cases: int, device: str, dataset_dir: str) -> dict:
    """One configuration, in this process."""

    from editors import make_editor
    from harness.executors.lockstep import start_batch
    from harness.executors.single import run_one
    from harness.executors.workbench import Workbench
    from pitfalls_benchmark.datasets import load_dataset
    from pitfalls_editkit.cache import default_cache_dir
    from pitfalls_editkit.contract import EditorSettings
    from pitfalls_editkit.models import load_model, resolve_device
    from pitfalls_editkit.undo import editing

    cache_dir = default_cache_dir()
    loaded = load_model(model_name, resolve_device(device), cache_dir=cache_dir)
    editor = make_editor(editor_name, loaded, EditorSettings(cache_dir=cache_dir))
    dataset = load_dataset(dataset_dir, limit=math.ceil(n_cases / 5))
    cases = dataset.all_cases()[:n_cases]
    warm = cases[-1].edit if hasattr(cases[-1], "edit") else cases[-1].edits[0]
    with editing(loaded.model, editor):  # templates, statistics: the one-time work
        editor.apply([warm])
    bench = Workbench.build(editor, dataset)
    if loaded.device.type == "cuda":
        torch.cuda.synchronize(loaded.device)
        torch.cuda.reset_peak_memory_stats(loaded.device)
    start = time.perf_counter()
    records = []
    for first in range(0, len(cases), batch):
        group = cases[first : first + batch]
        if batch == 1:
            records += [run_one(bench, case) for case in group]
            continue
        start_of_group = start_batch(bench, group)
        for case in group:
            outcome = start_of_group.take(case.case_id)
            if isinstance(outcome, Exception):
                raise outcome
            records.append(outcome or run_one(bench, case, ahead=start_of_group.take_ahead()))
    if loaded.device.type == "cuda":
        torch.cuda.synchronize(loaded.device)
        peak_mb = torch.cuda.max_memory_allocated(loaded.device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = time.perf_counter() - start
    edits = sum(len(r.edits) for r in records)
    return {
        "editor": editor_name, "K": batch, "cases": len(records), "seconds": seconds, "device": str(loaded.device),
        "cases_per_min": 60 * len(records) / seconds, "s_per_edit": sum(r.seconds_edit for r in records) / max(edits, 1),
        "peak_mb": peak_mb, "threads": torch.get_num_threads(),
        "metrics": {r.case_id: r.metrics for r in records}, "pitfalls": {r.case_id: r.pitfall for r in records},
    }


def largest_difference(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> tuple[float, float]:
    """The largest absolute and relative difference of any metric of any case."""
    pairs = [(value, b[case][name]) for case, metrics in a.items() for name, value in metrics.items() if case in b and name in b[case]]
    absolute = max((abs(y - x) for x, y in pairs), default=float("nan"))
    relative = max((abs(y - x) / abs(x) for x, y in pairs if x), default=float("nan"))
    return absolute, relative


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--editors", nargs="+", default=["rome"])
    parser.add_argument("--case-batch", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset-dir", default=None, help="published-format folder (default: the generated geography dataset)")
    parser.add_argument("--one", nargs=2, metavar=("EDITOR", "K"), help=argparse.SUPPRESS)  # child process: one configuration
    args = parser.parse_args()
    from pitfalls_editkit.cache import default_cache_dir
    from pitfalls_editkit.models import resolve_device

    dataset_dir = str(dataset_dir_or_default(args.dataset_dir, default_cache_dir()))
    try:
        resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    if args.one:
        print(json.dumps(measure(args.model, args.one[0], int(args.one[1]), args.cases, args.device, dataset_dir)))
        return
    print(f"model {args.model}, {args.cases} cases, torch {torch.__version__}")
    print("| editor | device | threads | K | cases/min | s/case | s/edit | peak MB | speed-up vs K=1 "
          "| largest metric difference vs K=1 (abs / rel) | same pitfall as K=1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []  # each row printed as soon as it is measured: a run stopped early keeps what it finished
    for editor in args.editors:
        for batch in args.case_batch:
            cmd = [sys.executable, "-m", "benchmarks.throughput", "--model", args.model, "--cases", str(args.cases),
                   "--device", args.device, "--dataset-dir", dataset_dir, "--one", editor, str(batch)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            if proc.returncode != 0:
                print(f"{editor} K={batch}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(table_row(rows[-1], rows), flush=True)


def table_row(row: dict, rows: list[dict]) -> str:
    """One configuration's row, compared with its editor's K = 1 row when that was measured."""
    base = next((r for r in rows if r["editor"] == row["editor"] and r["K"] == 1), None)
    speedup = f"{row['cases_per_min'] / base['cases_per_min']:.2f}x" if base else "-"
    diff, same = "-", "-"
    if base:
        absolute, relative = largest_difference(base["metrics"], row["metrics"])
        diff = f"{absolute:.1e} / {relative:.1e}"
        same = f"{sum(base['pitfalls'][c] == p for c, p in row['pitfalls'].items() if c in base['pitfalls'])}/{row['cases']}"
    return (f"| {row['editor']} | {row['device']} | {row['threads']} | {row['K']} | {row['cases_per_min']:.2f} | "
            f"{row['seconds'] / row['cases']:.1f} | {row['s_per_edit']:.2f} | {row['peak_mb']:.0f} | {speedup} | {diff} | {same} |")

if __name__ == "__main__":
    main()
