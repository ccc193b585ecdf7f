"""Every editor on every tiny architecture on one device: does the CUDA path work, and does it agree with the CPU?

    python -m benchmarks.device_check --device cuda --edits 4

For each (model, editor): where the edit lives (the devices of the weights it
wrote or of its patches' tensors; "context" for an editor that states the
edit before the prompt), whether every parameter is bit-identical after undo,
the largest difference between the scores on the device and on the CPU
before editing, the seconds per edit, and how many edits made the new object
beat the old one, scored as the harness scores (a module editor's patches
installed, a context editor's prompts stated). Edits go through the harness's
guard, which proves the model original after each. They come from the
generated geography dataset (RoundEdit easy), or ``--dataset-dir``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks import dataset_dir_or_default
from editors import SHIPPED, make_editor
from harness.executors.workbench import Workbench
from harness.guard import CaseEdits
from pitfalls_benchmark.datasets import example_edits, load_dataset, prompt_set
from pitfalls_editkit.cache import default_cache_dir
from pitfalls_editkit.contract import CONTEXT, EditorSettings
from pitfalls_editkit.fingerprints import parameter_digest
from pitfalls_editkit.models import load_model, resolve_device
from pitfalls_editkit.scoring import Scorer
from pitfalls_editkit.tiny_models import TINY_BUILDERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=list(TINY_BUILDERS))
    parser.add_argument("--editors", nargs="+", default=list(SHIPPED))
    parser.add_argument("--edits", type=int, default=4)
    parser.add_argument("--dataset-dir", default=None)
    parser.add_argument("--stats-corpus", default="gensim-wiki")
    args = parser.parse_args()
    cache = default_cache_dir()
    args.dataset_dir = dataset_dir_or_default(args.dataset_dir, cache)
    dataset = load_dataset(args.dataset_dir, splits=("easy",), limit=args.edits)
    cases = dataset.cases["easy"]
    examples = example_edits(Path(args.dataset_dir))  # what WISE and IKE draw unrelated prompts and demonstrations from
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), torch {torch.__version__}")
    print("| model | editor | edit lives on | undo exact | max score diff vs cpu | s/edit | wins |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        loaded = load_model(name, device, cache_dir=cache)
        cpu = load_model(name, torch.device("cpu"), cache_dir=cache)
        scorer, cpu_scorer = Scorer(loaded.model, loaded.tokenizer), Scorer(cpu.model, cpu.tokenizer)
        diffs = []
        for case in cases:
            prompts = prompt_set(case.edit.relation, case.edit.subject.label, dataset.round_prompts)
            objects = [o.label for o in case.true_objects]
            diffs.append(abs(scorer.object_probabilities(prompts, objects) - cpu_scorer.object_probabilities(prompts, objects)).max())
        for editor_name in args.editors:
            editor = make_editor(editor_name, loaded, EditorSettings(cache_dir=cache, stats_tokens=5000, stats_corpus=args.stats_corpus,
                                                                         dataset_edits=lambda: examples))
            before = parameter_digest(loaded.model)
            seconds, wins, where = [], 0, set()
            bench = Workbench.build(editor)  # its guard installs a module editor's patches, a context editor's prompts
            for case in cases:
                edit = case.edit
                with bench.guard.case(editor) as applied:
                    start = time.perf_counter()
                    applied.apply([edit], seed=0)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    seconds.append(time.perf_counter() - start)
                    where |= edit_devices(loaded.model, editor, applied)
                    new, old = bench.scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label])
                    wins += new > old
            exact = parameter_digest(loaded.model) == before
            print(f"| {name} | {editor_name} | {','.join(sorted(where))} | {exact} | {max(diffs):.2e} | {sum(seconds) / len(seconds):.3f} | {wins}/{len(cases)} |",
                  flush=True)


def edit_devices(model: torch.nn.Module, editor, applied: CaseEdits) -> set[str]:
    """The devices of what the edit wrote: declared weights, or the tensors held by the installed patches."""
    if editor.kind == CONTEXT:
        return {"context"}
    found = {str(model.get_parameter(n).device) for n in editor.declared_parameters()}
    for patch in applied.patches.patches.values():  # a Patch is a module: its state is buffers and parameters
        found |= {str(t.device) for t in [*patch.buffers(), *patch.parameters()]}
    return found


if __name__ == "__main__":
    main()
