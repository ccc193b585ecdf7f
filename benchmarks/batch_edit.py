"""One batch edit, then: did every edit of the batch take? Per editor that can edit a batch.

    python -m benchmarks.batch_edit --model gemma3-270m --editors memit --edits 8

Edits are the first N RoundEdit easy edits of ``--dataset-dir`` (default: the
generated geography dataset). Prints, per editor, the seconds for the batch,
how many edits made the new object beat the old one on the rewrite prompt,
the mean P(new) after the edit, and whether the model was bit-identical after undo.
"""

from __future__ import annotations

import argparse
import time

from benchmarks import dataset_dir_or_default
from editors import make_editor
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.cache import default_cache_dir
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.fingerprints import parameter_digest
from pitfalls_editkit.hparams import HyperParamsError, parse_hparams_set
from pitfalls_editkit.models import load_model, resolve_device
from pitfalls_editkit.scoring import Scorer
from pitfalls_editkit.undo import editing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--editors", nargs="+", default=["memit", "ft", "mend"])
    parser.add_argument("--edits", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset-dir", default=None)
    parser.add_argument("--hparams-set", action="append", default=[], metavar="KEY=VALUE",
                        help="replace one hyper-parameter of every editor's file, as the pytest option does (repeatable)")
    args = parser.parse_args()
    try:
        values = tuple(parse_hparams_set(args.hparams_set).items())
    except HyperParamsError as exc:
        parser.error(str(exc))
    cache = default_cache_dir()
    args.dataset_dir = dataset_dir_or_default(args.dataset_dir, cache)
    edits = [c.edit for c in load_dataset(args.dataset_dir, splits=("easy",), limit=args.edits).cases["easy"]]
    loaded = load_model(args.model, resolve_device(args.device), cache_dir=cache)
    scorer = Scorer(loaded.model, loaded.tokenizer)
    print(f"{args.model} on {loaded.device}, batch of {len(edits)} edits from {args.dataset_dir}"
          + (f", {' '.join(args.hparams_set)}" if args.hparams_set else ""))
    print("| editor | seconds | new beats old | mean P(new) | undo exact |")
    print("|---|---|---|---|---|")
    for name in args.editors:
        editor = make_editor(name, loaded, EditorSettings(cache_dir=cache, hparams_values=values))
        before = parameter_digest(loaded.model)
        with editing(loaded.model, editor):
            start = time.perf_counter()
            editor.apply(edits)
            seconds = time.perf_counter() - start
            scores = [scorer.fact_scores([e.relation.prompt.format(e.subject.label)], [e.new_object.label, e.object.label]) for e in edits]
        wins = sum(new > old for new, old in scores)
        mean_new = sum(new for new, _ in scores) / len(scores)
        print(f"| {name} | {seconds:.1f} | {wins}/{len(edits)} | {mean_new:.3f} | {parameter_digest(loaded.model) == before} |", flush=True)


if __name__ == "__main__":
    main()
