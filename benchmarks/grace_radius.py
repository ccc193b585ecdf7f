"""How far apart GRACE's keys lie on a model: the scale its deferral radius ``eps`` must be chosen on.

    python -m benchmarks.grace_radius --model gemma3-270m --dataset-dir ../shared/pitfalls-data/GPT2-XL --edits 10

For the edit prompts of the easy and hard splits, the key is the GRACE module's input at the prompt's last token.
The table gives the median key norm, the smallest and the median distance between two prompts' keys, and the
smallest distance from a key to any other position of any prompt. A radius below the smallest distances keeps
every other prompt's output bit-identical; one above them lets an edit answer for prompts it was not made on.
With ``--edits N``, the first N easy edits are then made one case at a time through the harness's guard: in how
many the new object beats the old one on the edit's prompt, in how many the next case's prompt scores
bit-identically while the codebook is installed, and the seconds they took.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from editors.grace import GRACE
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.models import load_model, resolve_device
from pitfalls_editkit.nethook import Trace


def key_distances(model_name: str, dataset_dir: str, limit: int, device: str, cache_dir: Path | None) -> dict[str, float]:
    loaded = load_model(model_name, resolve_device(device), cache_dir=cache_dir)
    editor = GRACE(loaded, EditorSettings(cache_dir=cache_dir or Path.home() / ".cache" / "pitfalls-harness"))
    cases = load_dataset(dataset_dir, splits=("easy", "hard"), limit=limit).cases
    keys, others = [], []
    for prompt in dict.fromkeys(case.edit.prompt for split in cases.values() for case in split):
        ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids.to(loaded.device)
        with torch.no_grad(), Trace(loaded.model, editor.module, retain_input=True, retain_output=False) as trace:
            loaded.model(input_ids=ids)
        keys.append(trace.input[0, -1].float())
        others.append(trace.input[0, :-1].float())
    stacked = torch.stack(keys)
    between = torch.cdist(stacked, stacked, compute_mode="donot_use_mm_for_euclid_dist")
    between.fill_diagonal_(float("inf"))
    to_positions = torch.cdist(stacked, torch.cat(others), compute_mode="donot_use_mm_for_euclid_dist")
    return {"prompts": len(keys), "module": editor.module, "eps": editor.hparams.eps,
            "key norm (median)": float(stacked.norm(dim=1).median()), "key to key (min)": float(between.min()),
            "key to key (median)": float(between[between.isfinite()].median()),
            "key to another position (min)": float(to_positions.min())}


def efficacy(model_name: str, dataset_dir: str, edits: int, device: str, cache_dir: Path | None) -> dict[str, object]:
    import time

    from harness.guard import ModelGuard
    from pitfalls_editkit.scoring import Scorer

    loaded = load_model(model_name, resolve_device(device), cache_dir=cache_dir)
    editor = GRACE(loaded, EditorSettings(cache_dir=cache_dir or Path.home() / ".cache" / "pitfalls-harness"))
    guard, scorer = ModelGuard(loaded.model), Scorer(loaded.model, loaded.tokenizer)
    cases = load_dataset(dataset_dir, splits=("easy",), limit=edits).cases["easy"]
    wins = untouched = 0
    start = time.perf_counter()
    for i, case in enumerate(cases):
        edit, other = case.edit, cases[(i + 1) % len(cases)].edit
        before = scorer.fact_scores([other.prompt], [other.new_object.label, other.object.label])
        with guard.case(editor) as applied:
            applied.apply([edit], seed=i)
            new, old = scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label])
            wins += new > old
            untouched += scorer.fact_scores([other.prompt], [other.new_object.label, other.object.label]) == before
    return {"edits": len(cases), "new beats old": wins, "next prompt bit-identical": untouched,
            "seconds": round(time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--limit", type=int, default=30, help="cases per split")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--edits", type=int, default=0, help="also make this many easy edits and report their efficacy")
    args = parser.parse_args()
    cache = Path(args.cache_dir) if args.cache_dir else None
    tables = [key_distances(args.model, args.dataset_dir, args.limit, args.device, cache)]
    if args.edits:
        tables.append(efficacy(args.model, args.dataset_dir, args.edits, args.device, cache))
    for found in tables:
        print("| " + " | ".join(found) + " |")
        print("|" + "---|" * len(found))
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in found.values()) + " |")


if __name__ == "__main__":
    main()
