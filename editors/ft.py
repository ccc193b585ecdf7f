"""FT: constrained fine-tuning, the paper's (and ROME's) fine-tuning baseline.

Adam on the parameters of one MLP output projection per listed layer, the
loss taken at the last prompt token (every token of the new object is
scored there, as in the reference), and after each step every updated
weight is clamped to within ``norm_constraint`` of its original value (an
L-infinity box). Edits of a batch are fine-tuned together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pitfalls_editkit.contract import Editor, EditorSettings
from pitfalls_editkit.facts import Edit
from pitfalls_editkit.hparams import as_dict, bounded, module_name
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import get_module
from pitfalls_editkit.scoring import encode_completion, pad_batch, vocabulary_logits

EARLY_STOP_LOSS = 1e-2


@dataclass(frozen=True)
class FTHyperParams:
    layers: list[int] = bounded(0, nonempty=True)
    num_steps: int = bounded(1)
    lr: float = bounded(above=0)
    weight_decay: float = bounded(0)
    norm_constraint: float = bounded(above=0)
    rewrite_module_tmp: str
    batch_size: int = bounded(1)


class FT(Editor):
    name = "ft"
    supports_batch = True

    def __init__(self, loaded: LoadedModel, settings: EditorSettings) -> None:
        super().__init__(loaded, settings)
        self.hparams_path, self.hparams = self.load_hparams(FTHyperParams)  # which also checks rewrite_module_tmp

    def describe(self) -> dict[str, Any]:
        return {"hparams_file": str(self.hparams_path), "hparams": as_dict(self.hparams)}

    def _parameters(self) -> dict[str, torch.nn.Parameter]:
        params = {}
        for layer in self.hparams.layers:
            module = module_name(self.hparams.rewrite_module_tmp, layer)
            for name, param in get_module(self.loaded.model, module).named_parameters():
                params[f"{module}.{name}"] = param
        return params

    def declared_parameters(self) -> list[str]:
        return list(self._parameters())

    def apply(self, edits: Sequence[Edit]) -> None:
        hp, model, tok, device = self.hparams, self.loaded.model, self.loaded.tokenizer, self.loaded.device
        params = self._parameters()
        low = {n: p.detach() - hp.norm_constraint for n, p in params.items()}
        high = {n: p.detach() + hp.norm_constraint for n, p in params.items()}
        examples = []
        for edit in edits:
            encoded = encode_completion(tok, edit.prompt, edit.new_object.label)
            examples.append((list(encoded.ids[: encoded.prompt_len]), list(encoded.ids[encoded.prompt_len :])))
        for param in params.values():
            param.requires_grad_(True)
        try:
            optimizer = torch.optim.Adam(list(params.values()), lr=hp.lr, weight_decay=hp.weight_decay)
            for _step in range(hp.num_steps):
                losses = []
                for start in range(0, len(examples), hp.batch_size):
                    batch = examples[start : start + hp.batch_size]
                    ids, mask, _, _ = pad_batch([p for p, _ in batch], tok.pad_token_id, "right", device)
                    last = torch.tensor([len(p) - 1 for p, _ in batch], device=device)
                    optimizer.zero_grad()
                    log_probs = torch.log_softmax(vocabulary_logits(model, ids, mask, torch.arange(len(batch), device=device), last), -1)
                    per_edit = torch.stack([-log_probs[row, torch.tensor(t, device=device)].mean() for row, (_, t) in enumerate(batch)])
                    loss = per_edit.mean()
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"FT: non-finite loss for {edits[0].describe()}")
                    loss.backward()
                    optimizer.step()
                    with torch.no_grad():
                        for name, param in params.items():
                            param.copy_(torch.maximum(torch.minimum(param, high[name]), low[name]))
                    losses.append(loss.item())
                if sum(losses) / len(losses) < EARLY_STOP_LOSS:
                    break
        finally:
            for param in params.values():
                param.requires_grad_(False)
