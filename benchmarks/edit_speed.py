"""Seconds per edit and per scoring call, and edit efficacy, per model (ROME unless ``--editor``).

    python -m benchmarks.edit_speed --models tiny-gpt2 gemma3-270m --edits 10
    python -m benchmarks.edit_speed --models tiny-llama --editor grace --edits 20 --hparams-set n_iter=50

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
from harness.executors.workbench import Workbench
from pitfalls_benchmark.datasets import example_edits, load_dataset, prompt_set
from pitfalls_editkit.cache import default_cache_dir
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.hparams import parse_hparams_set
from pitfalls_editkit.models import load_model, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny-gpt2", "gemma3-270m"])
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--editor", default="rome", help="a shipped editor's name (default: rome)")
    parser.add_argument("--hparams-set", action="append", default=[], metavar="KEY=VALUE",
                        help="replace one hyper-parameter, as the suites' --hparams-set does (repeatable)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset-dir", default=str(Path(__file__).resolve().parents[2] / "shared/pitfalls-data/GPT2-XL"))
    args = parser.parse_args()
    cases = load_dataset(args.dataset_dir, splits=("easy",), limit=args.edits)
    try:
        values = tuple(parse_hparams_set(args.hparams_set).items())
    except ValueError as exc:
        parser.error(str(exc))
    examples = example_edits(Path(args.dataset_dir))  # what WISE and IKE draw unrelated prompts and demonstrations from
    rows = []
    for name in args.models:
        start = time.perf_counter()
        loaded = load_model(name, resolve_device(args.device), cache_dir=default_cache_dir())
        load_s = time.perf_counter() - start
        editor = make_editor(args.editor, loaded, EditorSettings(cache_dir=default_cache_dir(), hparams_values=values,
                                                                 dataset_edits=lambda: examples))
        start = time.perf_counter()
        if hasattr(editor, "inverse_covariance"):  # ROME's statistics and templates, so that they are not in the first edit
            editor.context_templates()
            editor.inverse_covariance(editor.hparams.rewrite_module_tmp.format(editor.hparams.layers[0]))
        stats_s = time.perf_counter() - start
        bench = Workbench.build(editor)  # the harness's guard installs a module editor's patches, a context editor's prompts
        scorer = bench.scorer
        edit_s, score_s, wins = [], [], 0
        for case in cases.cases["easy"]:
            edit = case.edit
            prompts = prompt_set(edit.relation, edit.subject.label, cases.round_prompts)
            start = time.perf_counter()
            scorer.fact_scores(prompts, [o.label for o in case.true_objects] + [edit.new_object.label])
            score_s.append(time.perf_counter() - start)
            with bench.guard.case(editor) as applied:
                start = time.perf_counter()
                applied.apply([edit], seed=0)
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
