"""Seconds per ROME edit and per scoring call, and edit efficacy, per model.

    python -m benchmarks.edit_speed --models tiny-gpt2 gemma3-270m --edits 10

Prints one row per model: load time, statistics time (0 when cached),
mean seconds per edit, mean seconds to score one RoundEdit fact (prompt set x
true objects), and how many edits made the new object beat the old one on
the rewrite prompt (RoundEdit easy, first N edits of the published GPT2-XL split).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from editors import make_editor
from pitfalls_benchmark.datasets import load_dataset, prompt_set
from pitfalls_editkit.cache import default_cache_dir
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.models import load_model, resolve_device
from pitfalls_editkit.scoring import Scorer
from pitfalls_editkit.undo import editing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny-gpt2", "gemma3-270m"])
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset-dir", default=str(Path(__file__).resolve().parents[2] / "shared/pitfalls-data/GPT2-XL"))
    args = parser.parse_args()
    cases = load_dataset(args.dataset_dir, splits=("easy",), limit=args.edits)
    rows = []
    for name in args.models:
        start = time.perf_counter()
        loaded = load_model(name, resolve_device(args.device), cache_dir=default_cache_dir())
        load_s = time.perf_counter() - start
        editor = make_editor("rome", loaded, EditorSettings(cache_dir=default_cache_dir()))
        start = time.perf_counter()
        editor.context_templates()
        editor.inverse_covariance(editor.hparams.rewrite_module_tmp.format(editor.hparams.layers[0]))
        stats_s = time.perf_counter() - start
        scorer = Scorer(loaded.model, loaded.tokenizer)
        edit_s, score_s, wins = [], [], 0
        for case in cases.cases["easy"]:
            edit = case.edit
            prompts = prompt_set(edit.relation, edit.subject.label, cases.round_prompts)
            start = time.perf_counter()
            scorer.fact_scores(prompts, [o.label for o in case.true_objects] + [edit.new_object.label])
            score_s.append(time.perf_counter() - start)
            with editing(loaded.model, editor):
                start = time.perf_counter()
                editor.apply([edit])
                edit_s.append(time.perf_counter() - start)
                new, old = scorer.fact_scores(prompts[:1], [edit.new_object.label, edit.object.label])
            wins += new > old
        rows.append((name, str(loaded.device), load_s, stats_s, statistics.mean(edit_s), max(edit_s), statistics.mean(score_s), wins, len(edit_s)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| model | device | load s | stats+templates s | s/edit mean | s/edit max | s/fact score | edit wins |")
    print("|---|---|---|---|---|---|---|---|")
    for name, device, load_s, stats_s, mean_e, max_e, mean_s, wins, n in rows:
        print(f"| {name} | {device} | {load_s:.1f} | {stats_s:.1f} | {mean_e:.2f} | {max_e:.2f} | {mean_s:.3f} | {wins}/{n} |")


if __name__ == "__main__":
    main()
