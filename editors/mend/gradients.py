"""The pieces MEND needs from the model: edit batches, their loss, gradient factors, and weights swapped in.

``gradient_factors`` runs the edit loss once and returns, for every edited
weight, the layer inputs ``u`` and the loss's gradients ``delta`` at the layer
outputs, one row per token. ``swapped_weights`` puts differentiable tensors in
place of weights for one forward pass, so the trainer can backpropagate
through an edit into the editor network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from pitfalls_editkit.facts import Edit
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import get_module
from pitfalls_editkit.scoring import encode_completion, pad_batch, vocabulary_logits


@dataclass(frozen=True)
class TargetBatch:
    """Token ids of ``prompt + " " + target`` texts, and where each target token is predicted."""

    ids: torch.Tensor
    mask: torch.Tensor
    rows: torch.Tensor  # one entry per target token
    cols: torch.Tensor  # position whose logits predict it
    targets: torch.Tensor
    n_texts: int


def target_batch(loaded: LoadedModel, prompts: Sequence[str], targets: Sequence[str]) -> TargetBatch:
    encoded = [encode_completion(loaded.tokenizer, p, t) for p, t in zip(prompts, targets)]
    ids, mask, _, _ = pad_batch([list(e.ids) for e in encoded], loaded.tokenizer.pad_token_id, "right", loaded.device)
    rows, cols, tokens = [], [], []
    for row, e in enumerate(encoded):
        for pos in range(e.prompt_len, len(e.ids)):
            rows.append(row)
            cols.append(pos - 1)
            tokens.append(e.ids[pos])
    as_tensor = lambda v: torch.tensor(v, device=loaded.device)
    return TargetBatch(ids, mask, as_tensor(rows), as_tensor(cols), as_tensor(tokens), len(encoded))


def target_nll(loaded: LoadedModel, batch: TargetBatch) -> torch.Tensor:
    """Mean over texts of the mean negative log-likelihood of each text's target tokens."""
    logits = vocabulary_logits(loaded.model, batch.ids, batch.mask, batch.rows, batch.cols)
    token_nll = -torch.log_softmax(logits, -1).gather(1, batch.targets[:, None])[:, 0]
    per_text = torch.zeros(batch.n_texts, device=logits.device).index_add(0, batch.rows, token_nll)
    counts = torch.zeros(batch.n_texts, device=logits.device).index_add(0, batch.rows, torch.ones_like(token_nll))
    return (per_text / counts).mean()


def edit_batch(loaded: LoadedModel, edits: Sequence[Edit]) -> TargetBatch:
    return target_batch(loaded, [e.prompt for e in edits], [e.new_object.label for e in edits])


def gradient_factors(loaded: LoadedModel, batch: TargetBatch, module_names: Sequence[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module: (u, delta)}``, rows = the batch's non-padding tokens, detached."""
    modules = {name: get_module(loaded.model, name) for name in module_names}
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def capture(_module, args, output):
            inputs[name] = args[0].detach()
            outputs[name] = output
        return capture

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    weights = [m.weight for m in modules.values()]
    was = [w.requires_grad for w in weights]
    try:
        with torch.enable_grad():
            for w in weights:
                w.requires_grad_(True)  # so the outputs join the graph; no weight gradient is computed
            loss = target_nll(loaded, batch)
            deltas = torch.autograd.grad(loss, [outputs[name] for name in module_names])
    finally:
        for h in handles:
            h.remove()
        for w, flag in zip(weights, was):
            w.requires_grad_(flag)
    tokens = batch.mask.bool()
    return {name: (inputs[name][tokens].float(), delta[tokens].float()) for name, delta in zip(module_names, deltas)}


@contextlib.contextmanager
def swapped_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> Iterator[None]:
    """Use ``tensors`` (by parameter name) instead of the model's parameters inside the block."""
    saved = {}
    try:
        for name, tensor in tensors.items():
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name)
            saved[name] = (module, attr, module._parameters.pop(attr))
            setattr(module, attr, tensor)
        yield
    finally:
        for module, attr, param in saved.values():
            delattr(module, attr)
            module.register_parameter(attr, param)
