"""Train a MEND editor network: ``python -m editors.mend.train --model NAME [options]``.

The original objective: after the network's update, the edited model's loss
on a *paraphrase* of the edit (``cedit``) plus the KL divergence of its
next-token distributions on unrelated facts from the unedited model's
(``cloc``). Edits come from datasets in the published format (the generated
geography dataset by default; ``--dataset-dir`` adds others). The first
``--holdout`` cases of every split are never trained on; the held-out
RoundEdit easy edits are the validation set (edit success, edit loss, KL).

Checkpoints (network, optimiser, step, history) are written every
``val_every`` steps; ``--resume`` continues from one. The checkpoint also
keeps the best network seen at a validation (highest edit success, then
lowest KL on unrelated facts); that is the one ``--editor mend`` uses.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from editors.mend.config import HPARAMS_DIR, MENDHyperParams, build_network, checkpoint_paths, module_names
from editors.mend.gradients import edit_batch, gradient_factors, swapped_weights, target_batch, target_nll
from editors.mend.network import MENDNetwork
from pitfalls_benchmark.datasets import ConflictCase, Dataset, RoundCase, load_dataset
from pitfalls_editkit.cache import locked
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.facts import Edit, fill
from pitfalls_editkit.hparams import as_dict, editor_hparams
from pitfalls_editkit.low_rank import weight_update
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import get_module
from pitfalls_editkit.progress import step as one_time_step
from pitfalls_editkit.scoring import pad_batch, vocabulary_logits


@dataclass(frozen=True)
class Example:
    edit: Edit
    paraphrases: tuple[str, ...]  # templates with "{}" for the subject
    source: str = ""  # the dataset folder it came from


@dataclass(frozen=True)
class TrainingData:
    train: list[Example]
    val: list[Example]
    locality: list[tuple[str, str]]  # unrelated (prompt, true object) facts
    sources: list[str]


def training_data(datasets: list[Dataset], holdout: int) -> TrainingData:
    """Edits of every case past the first ``holdout`` of each split; the held-out easy edits for validation."""
    train, val, locality = [], [], []
    for dataset in datasets:
        for split, cases in dataset.cases.items():
            for position, case in enumerate(cases):
                edits = case.edits if isinstance(case, ConflictCase) else (case.edit,)
                prompts = dataset.prompts_for(case)
                examples = [Example(e, prompts.get(e.relation.id, ()) or (e.relation.prompt,), str(dataset.root)) for e in edits]
                if position >= holdout:
                    train += examples
                    locality += [(e.prompt, e.object.label) for e in edits]
                elif split == "easy" and isinstance(case, RoundCase):
                    val += examples
    if not train or not val:
        raise ValueError("MEND training needs cases past --holdout in some split and held-out RoundEdit easy cases")
    return TrainingData(train, val, locality, [str(d.root) for d in datasets])


def edited_weights(loaded: LoadedModel, network: MENDNetwork, edits: list[Edit], names: list[str]) -> dict[str, torch.Tensor]:
    """``{parameter name: W + dW}``, differentiable in the network's parameters."""
    updates = network(gradient_factors(loaded, edit_batch(loaded, edits), names))
    out = {}
    for name, update in updates.items():
        module = get_module(loaded.model, name)
        out[f"{name}.weight"] = module.weight + weight_update(module, update).to(module.weight.dtype)
    return out


def locality_logprobs(loaded: LoadedModel, facts: list[tuple[str, str]]) -> tuple[torch.Tensor, Any]:
    tok = loaded.tokenizer
    ids, mask, _, _ = pad_batch([tok(f"{p} {o}")["input_ids"] for p, o in facts], tok.pad_token_id, "right", loaded.device)
    rows, cols = mask.nonzero(as_tuple=True)
    return torch.log_softmax(vocabulary_logits(loaded.model, ids, mask, rows, cols), -1), (ids, mask, rows, cols)


def kl_from_base(loaded: LoadedModel, base: torch.Tensor, batch: Any) -> torch.Tensor:
    ids, mask, rows, cols = batch
    post = torch.log_softmax(vocabulary_logits(loaded.model, ids, mask, rows, cols), -1)
    return torch.nn.functional.kl_div(post, base, log_target=True, reduction="batchmean")


def paraphrase_batch(loaded: LoadedModel, examples: list[Example], rng: random.Random):
    prompts = [fill(rng.choice(x.paraphrases), x.edit.subject.label) for x in examples]
    return target_batch(loaded, prompts, [x.edit.new_object.label for x in examples])


@torch.no_grad()
def validate(loaded: LoadedModel, network: MENDNetwork, data: TrainingData, names: list[str], limit: int = 20) -> dict[str, Any]:
    """The first ``limit`` held-out edits of each dataset, one at a time: success (new beats old on the rewrite
    prompt), loss on a paraphrase, and KL on unrelated facts; overall and per dataset."""
    from pitfalls_editkit.scoring import Scorer

    network.eval()
    scorer = Scorer(loaded.model, loaded.tokenizer)
    wins: dict[str, list[bool]] = {}
    losses, kls = [], []
    rng = random.Random(0)
    base, loc_batch = locality_logprobs(loaded, data.locality[:8])
    examples = [x for source in data.sources for x in [v for v in data.val if v.source == source][:limit]]
    for x in examples:
        with swapped_weights(loaded.model, edited_weights(loaded, network, [x.edit], names)):
            new, old = scorer.fact_scores([x.edit.prompt], [x.edit.new_object.label, x.edit.object.label])
            wins.setdefault(x.source, []).append(new > old)
            losses.append(target_nll(loaded, paraphrase_batch(loaded, [x], rng)).item())
            kls.append(kl_from_base(loaded, base, loc_batch).item())
    network.train()
    every = [w for ws in wins.values() for w in ws]
    return {"edit_success": sum(every) / len(every), "edit_loss": sum(losses) / len(losses), "kl": sum(kls) / len(kls),
            "n": len(every), "edit_success_by_dataset": {k: sum(v) / len(v) for k, v in wins.items()}}


def train(loaded: LoadedModel, hp: MENDHyperParams, data: TrainingData, out: Path, seed: int = 0, steps: int | None = None,
          resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train and checkpoint to ``out``; returns the last checkpoint's content (without tensors)."""
    from tqdm import tqdm

    names = module_names(hp)
    network = build_network(loaded, hp)
    optimizer = torch.optim.Adam([
        {"params": [p for n, p in network.named_parameters() if n != "edit_lrs"], "lr": hp.lr},
        {"params": [network.edit_lrs], "lr": hp.lr_lr},
    ])
    state: dict[str, Any] = {"step": 0, "history": []}
    if resume and out.is_file():
        state = torch.load(out, map_location="cpu", weights_only=True)
        network.load_state_dict(state["network"])
        if optimizer_file(out).is_file():
            optimizer.load_state_dict(torch.load(optimizer_file(out), map_location="cpu", weights_only=True))
    steps = steps if steps is not None else hp.train_steps
    rng = random.Random(f"{seed}:{state['step']}")
    names_msg = f"{len(data.train)} training edits, {len(data.val)} held-out"
    if not state["history"]:
        state["history"].append({"step": 0, "seconds": 0.0, **validate(loaded, network, data, names)})
    network.train()
    started = time.perf_counter()
    bar = tqdm(range(state["step"], steps), desc=f"MEND {loaded.name} ({names_msg})", file=sys.stderr,
               disable=not progress or not sys.stderr.isatty())
    for step in bar:
        examples = rng.sample(data.train, min(hp.batch_size, len(data.train)))
        with torch.no_grad():  # the unedited model's distributions are targets, not part of the graph
            base, loc_batch = locality_logprobs(loaded, rng.sample(data.locality, min(hp.batch_size, len(data.locality))))
        weights = edited_weights(loaded, network, [x.edit for x in examples], names)
        with swapped_weights(loaded.model, weights):
            edit_loss = target_nll(loaded, paraphrase_batch(loaded, examples, rng))
            kl = kl_from_base(loaded, base, loc_batch)
        loss = hp.cedit * edit_loss + hp.cloc * kl
        if not torch.isfinite(loss):
            raise FloatingPointError(f"MEND training: non-finite loss at step {step + 1}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        bar.set_postfix(edit=f"{edit_loss.item():.3f}", kl=f"{kl.item():.4f}")
        if (step + 1) % hp.val_every == 0 or step + 1 == steps:
            seconds = state["history"][-1]["seconds"] + time.perf_counter() - started
            started = time.perf_counter()
            state["history"].append({"step": step + 1, "seconds": round(seconds, 1), **validate(loaded, network, data, names)})
            state.update(step=step + 1, network=network.state_dict())
            if is_better(state["history"][-1], state.get("best")):
                state.update(best={k: v for k, v in state["history"][-1].items()},
                             best_network={k: v.detach().clone() for k, v in network.state_dict().items()})
            _save(out, loaded, hp, data, state, optimizer)
    return {k: v for k, v in state.items() if k not in ("network", "best_network")}


def is_better(row: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Validation order: higher edit success first, then lower KL on unrelated facts."""
    return best is None or (row["edit_success"], -row["kl"]) > (best["edit_success"], -best["kl"])


def optimizer_file(checkpoint: Path) -> Path:
    """The optimiser's state sits beside the checkpoint, so the checkpoint itself stays small enough to ship."""
    return checkpoint.with_name(checkpoint.name + ".optim")


def _save(out: Path, loaded: LoadedModel, hp: MENDHyperParams, data: TrainingData, state: dict[str, Any],
          optimizer: torch.optim.Optimizer) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {**state, "hparams": as_dict(hp), "model": loaded.name, "model_fingerprint": loaded.fingerprint,
               "trained_on": data.sources, "n_train": len(data.train), "validation": state["history"][-1]}
    for path, content in ((optimizer_file(out), optimizer.state_dict()), (out, payload)):
        tmp = path.with_name(path.name + ".tmp")
        torch.save(content, tmp)
        tmp.replace(path)


def train_on_first_use(loaded: LoadedModel, hp: MENDHyperParams, settings: EditorSettings) -> Path:
    """Train a network for this model on the generated geography dataset, cache it, and say so."""
    from pitfalls_generator.cli import default_dataset_dir

    out = checkpoint_paths(hp, settings.cache_dir, loaded.fingerprint)[1]
    with locked(out):
        if not out.is_file():
            with one_time_step(f"MEND: no trained network for {loaded.name}; training one on the generated geography dataset "
                      f"({hp.train_steps} steps) into {out}"):
                data = training_data([load_dataset(default_dataset_dir(settings.cache_dir))], holdout=20)
                # The network's initial weights come from torch's generator: seeded here, so that the same run trains the
                # same network whatever ran before it in this process, and forked, so the run's own draws do not change.
                with torch.random.fork_rng(devices=[loaded.device] if loaded.device.type == "cuda" else []):
                    torch.manual_seed(settings.seed)
                    train(loaded, hp, data, out, seed=settings.seed, progress=False)
    return out


def main(argv: list[str] | None = None) -> int:
    from pitfalls_editkit.cache import default_cache_dir
    from pitfalls_editkit.models import load_model, resolve_device
    from pitfalls_generator.cli import default_dataset_dir

    parser = argparse.ArgumentParser(prog="python -m editors.mend.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--dataset-dir", action="append", default=[], help="published-format folder (repeatable); "
                        "the generated geography dataset is always included")
    parser.add_argument("--holdout", type=int, default=20, help="first N cases of every split are never trained on")
    parser.add_argument("--steps", type=int, default=None, help="default: the hyper-parameters' train_steps")
    parser.add_argument("--hparams", default=None)
    parser.add_argument("--out", default=None, help="checkpoint file (default: the cache's mend/ folder)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    torch.manual_seed(args.seed)
    loaded = load_model(args.model, resolve_device(args.device), cache_dir=cache)
    _, hp = editor_hparams("mend", [HPARAMS_DIR], MENDHyperParams, loaded, args.hparams)
    datasets = [load_dataset(default_dataset_dir(cache))] + [load_dataset(d) for d in args.dataset_dir]
    data = training_data(datasets, args.holdout)
    out = Path(args.out) if args.out else checkpoint_paths(hp, cache, loaded.fingerprint)[1]
    result = train(loaded, hp, data, out, seed=args.seed, steps=args.steps, resume=args.resume)
    for row in result["history"]:
        by_dataset = "  ".join(f"{Path(k).name} {100 * v:.0f}%" for k, v in row["edit_success_by_dataset"].items())
        print(f"step {row['step']:5d}  {row['seconds']:8.1f} s  edit success {100 * row['edit_success']:5.1f}% ({by_dataset})  "
              f"edit loss {row['edit_loss']:.3f}  KL {row['kl']:.4f}  (n={row['n']})")
    best = result.get("best")
    if best:
        print(f"kept for editing: the network of step {best['step']} (edit success {100 * best['edit_success']:.1f}%, KL {best['kl']:.4f})")
    print(f"checkpoint: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
