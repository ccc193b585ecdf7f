"""What --generation and --general-ability cost: a table of seconds a case with and without them.

    python -m benchmarks.ability_cost --model gemma3-270m --editor ft --cases 3 \\
        --dataset-dir ../shared/pitfalls-data/GPT2-XL

Targets (issue 25): --generation adds at most 50% to a case's time; the default general-ability measures
(perplexity and kg) at chain checkpoints, every 10 edits, add at most 20% to a chain's time. The first easy cases
of the dataset run one at a time, each twice (without, then with generation), on one model, after a first run that
keeps the unedited model's scores and answers on disk, as a run finds them after the first editor's; the general-ability
measurement is timed on the unedited model and compared with the time of the edits between two checkpoints.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from editors.registry import make_editor
from harness.executors.single import run_one
from harness.executors.workbench import Workbench
from harness.general_ability import GeneralAbility
from harness.original_scores import OriginalScores
from pitfalls_benchmark.datasets import example_edits, load_dataset
from pitfalls_editkit.cache import default_cache_dir
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.models import load_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ability_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--editor", default="ft")
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--measures", default="perplexity,kg")
    parser.add_argument("--every", type=int, default=10, help="edits between two general-ability measurements on a chain")
    args = parser.parse_args(argv)
    cache = default_cache_dir()
    loaded = load_model(args.model, torch.device("cpu"), cache_dir=cache)
    examples = example_edits(args.dataset_dir)
    editor = make_editor(args.editor, loaded, EditorSettings(cache_dir=cache, dataset_edits=lambda: examples))
    dataset = load_dataset(args.dataset_dir, splits=("easy",), limit=args.cases)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ability-cost-") as kept:  # not the cache's file: every run starts empty
        originals = OriginalScores(Path(kept) / "original.jsonl")
        plain = Workbench.build(editor, dataset, original_scores=originals)
        generating = Workbench.build(editor, dataset, guard=plain.guard, generation=8, original_scores=originals)
        for case in dataset.cases["easy"]:
            run_one(generating, case)  # the unedited model's scores and answers, kept as a run keeps them
            start = time.perf_counter()
            run_one(plain, case)
            without = time.perf_counter() - start
            start = time.perf_counter()
            run_one(generating, case)
            rows.append((case.case_id, without, time.perf_counter() - start))
    print(f"--generation on {args.model} with {args.editor} (easy cases, one CPU process)")
    print("| case | seconds without | seconds with --generation | added |")
    print("|---|---|---|---|")
    for case_id, without, with_generation in rows:
        print(f"| {case_id} | {without:.1f} | {with_generation:.1f} | {100 * (with_generation / without - 1):+.0f}% |")
    total_without, total_with = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"| all | {total_without:.1f} | {total_with:.1f} | {100 * (total_with / total_without - 1):+.0f}% |")
    ability = GeneralAbility.build(args.measures, loaded, plain.scorer, cache / "general-ability-benchmark", "float32")
    start = time.perf_counter()
    ability.measure(loaded, plain.scorer)
    measuring = time.perf_counter() - start
    per_edit = total_without / len(rows) / 2  # a RoundEdit case makes two edits and scores three times
    print()
    print(f"--general-ability {args.measures}: {measuring:.1f} s a measurement; every {args.every} edits on a chain of "
          f"{per_edit:.1f} s an edit (with its scoring) that adds {100 * measuring / (args.every * per_edit):.0f}% to the chain")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
