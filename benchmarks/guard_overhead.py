"""What the editor-contract checks cost per case: the guard's fingerprints and clones against the whole case.

    python -m benchmarks.guard_overhead --model gemma3-270m --editors rome ft mend --cases 1

Runs the first ``--cases`` cases of every split of ``--dataset-dir`` (default:
the generated geography dataset) through the case runner, as the suites do,
and prints per editor: seconds per case, the guard's fingerprint checks and
clones per case, their share of the case, and how many checks ran.
"""

from __future__ import annotations

import argparse
import time

from benchmarks import dataset_dir_or_default
from editors import make_editor
from harness.executors.single import run_one
from harness.executors.workbench import Workbench
from harness.guard import ModelGuard
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.cache import default_cache_dir
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.models import load_model, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--editors", nargs="+", default=["rome", "ft", "mend"])
    parser.add_argument("--cases", type=int, default=1, help="cases per split")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset-dir", default=None)
    args = parser.parse_args()
    cache = default_cache_dir()
    args.dataset_dir = dataset_dir_or_default(args.dataset_dir, cache)
    dataset = load_dataset(args.dataset_dir, limit=args.cases)
    loaded = load_model(args.model, resolve_device(args.device), cache_dir=cache)
    n_values = sum(p.numel() for p in loaded.model.parameters())
    print(f"{args.model} on {loaded.device}: {n_values / 1e6:.0f}M parameter values; {len(dataset.all_cases())} cases per editor")
    print("| editor | s per case | fingerprint passes per case | fingerprint s per case | clone + versions s per case "
          "| state checks s per case | overhead % |")
    print("|---|---|---|---|---|---|---|")
    for name in args.editors:
        editor = make_editor(name, loaded, EditorSettings(cache_dir=cache))
        guard = ModelGuard(loaded.model)
        bench = Workbench.build(editor, dataset, guard)
        run_one(bench, dataset.all_cases()[0])  # warm-up: statistics, templates, first-use costs
        guard.stats.check_seconds = guard.stats.snapshot_seconds = guard.stats.state_seconds = 0.0
        guard.stats.checks = 0
        start = time.perf_counter()
        cases = dataset.all_cases()
        for case in cases:
            run_one(bench, case)
        total = time.perf_counter() - start
        n = len(cases)
        check, clone, state = (seconds / n for seconds in (guard.stats.check_seconds, guard.stats.snapshot_seconds,
                                                           guard.stats.state_seconds))
        print(f"| {name} | {total / n:.2f} | {guard.stats.checks / n:.1f} | {check:.3f} | {clone:.3f} | {state:.3f} | "
              f"{100 * (check + clone + state) / (total / n):.2f} |", flush=True)


if __name__ == "__main__":
    main()
