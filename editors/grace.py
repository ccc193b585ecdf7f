"""GRACE: a codebook of keys and values around one layer, with a deferral radius per key (Hartvigsen et al., 2023).

Written from the paper and the references (thartvigsen/grace, EasyEdit's ``grace``), our own code. For each edit
the key is the layer's input at the prompt's last token. When no key of the codebook lies within its radius plus
``eps`` of it, the key is added with a new value; within that distance, a key of the same new object has its radius
grown to cover the new key ("coverage"), and a key of another object has both radii set to half their distance so
they no longer overlap. The value (cold: random; warm: the layer's output there) is trained with Adam, ``n_iter``
steps at ``edit_lr``, so that with it in place of the layer's output the model predicts the new object after the
prompt (the loss on the object's tokens, teacher-forced, the prompt masked as in the reference).

The codebook is a :class:`pitfalls_editkit.Patch` the harness installs on the layer: at every position whose input
lies within the radius of a key, the layer's output is replaced by the value of the nearest such key (on a tie,
the later key; the references take the nearest key and then test its radius, so a round trip's second edit,
whose key equals the first's, would never answer); elsewhere the output is the layer's own, bit for bit. The references query one position (the last prompt token, found from the
edit's labels, "replace_last"); the patch cannot tell where a prompt ends inside a scored or generated sequence,
so it tests every position. For a prompt the model was edited on, the last prompt token's input is the key itself
(distance 0, causal attention); the object's tokens, later in the sequence, are other inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pitfalls_editkit.contract import EditorSettings, ModuleEditor
from pitfalls_editkit.facts import Edit
from pitfalls_editkit.hparams import HyperParamsError, as_dict, bounded, module_name
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import Trace
from pitfalls_editkit.patches import Patch
from pitfalls_editkit.scoring import encode_completion

VALUE_INITS = ("cold", "warm")
RADIUS_SPLIT_MARGIN = 1e-5  # the reference's: a shrunk radius stops just short of half the distance


@dataclass(frozen=True)
class GRACEHyperParams:
    layers: list[int] = bounded(0, nonempty=True)  # the one layer whose module gets the codebook
    module_tmp: str  # the wrapped module, e.g. model.layers.{}.mlp.down_proj (the reference's inner_params)
    edit_lr: float = bounded(above=0)
    n_iter: int = bounded(1)
    eps: float = bounded(above=0)  # a new key's deferral radius
    val_init: str  # cold (random) or warm (the layer's output)


class Codebook(Patch):
    """Keys (layer inputs), values (layer outputs), radii, and the new object each key stands for."""

    def __init__(self, key_width: int, value_width: int, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("keys", torch.zeros(0, key_width, device=device, dtype=dtype))
        self.register_buffer("values", torch.zeros(0, value_width, device=device, dtype=dtype))
        self.register_buffer("radii", torch.zeros(0, device=device, dtype=torch.float32))
        self.labels: list[str] = []

    def nearest(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each query row: the distance to its nearest key, and that key's index."""
        distances = torch.cdist(queries.float(), self.keys.float(), compute_mode="donot_use_mm_for_euclid_dist")  # exact: 0 for the key itself
        return distances.min(dim=-1)

    def covering(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each query row: whether a key's radius covers it, and the nearest such key (a tie goes to the later
        key: a later edit of the same prompt supersedes an earlier one)."""
        distances = torch.cdist(queries.float(), self.keys.float(), compute_mode="donot_use_mm_for_euclid_dist")
        distances = torch.where(distances <= self.radii, distances, torch.inf).flip(-1)
        distance, flipped = distances.min(dim=-1)
        return torch.isfinite(distance), len(self.labels) - 1 - flipped

    def forward(self, inputs: tuple[Any, ...], output: Any, values: torch.Tensor | None = None) -> Any:
        if len(self.labels) == 0:
            return output
        hidden = inputs[0]
        covered, index = self.covering(hidden.reshape(-1, hidden.shape[-1]))
        inside = covered.reshape(hidden.shape[:-1])
        if not bool(inside.any()):
            return output
        chosen = (self.values if values is None else values)[index].reshape(*hidden.shape[:-1], -1).to(output.dtype)
        return torch.where(inside.unsqueeze(-1), chosen, output)


class GRACE(ModuleEditor):
    name = "grace"
    supports_batch = False  # edits arrive one at a time, as in the references' lifelong streams

    def __init__(self, loaded: LoadedModel, settings: EditorSettings) -> None:
        super().__init__(loaded, settings)
        self.hparams_path, self.hparams = self.load_hparams(GRACEHyperParams)  # which also checks module_tmp
        hp = self.hparams
        if len(hp.layers) != 1:
            raise HyperParamsError(f"{self.hparams_path}: layers {hp.layers}: GRACE wraps one layer; give one")
        if hp.val_init not in VALUE_INITS:
            raise HyperParamsError(f"{self.hparams_path}: val_init {hp.val_init!r}: expected one of {', '.join(VALUE_INITS)}")
        self.module = module_name(hp.module_tmp, hp.layers[0] % loaded.num_layers)
        self.codebook: Codebook | None = None

    def describe(self) -> dict[str, Any]:
        return {"hparams_file": str(self.hparams_path), "hparams": as_dict(self.hparams), "module": self.module}

    def model_restored(self) -> None:
        self.codebook = None  # the harness removed it with the case (or the chain's segment)

    def apply(self, edits: Sequence[Edit]) -> dict[str, Patch]:
        for edit in edits:
            self._edit(edit)
        return {self.module: self.codebook}

    def _edit(self, edit: Edit) -> None:
        model, tok, device = self.loaded.model, self.loaded.tokenizer, self.loaded.device
        encoded = encode_completion(tok, edit.prompt, edit.new_object.label)
        ids = torch.tensor([encoded.ids], device=device)
        last = encoded.prompt_len - 1
        with torch.no_grad(), Trace(model, self.module, retain_input=True, retain_output=True) as trace:
            model(input_ids=ids)
        key, layer_output = trace.input[0, last].detach(), trace.output[0, last].detach()
        if self.codebook is None:
            self.codebook = Codebook(key.shape[-1], layer_output.shape[-1], device, layer_output.dtype)
        index = self._place_key(key, edit.new_object.label, layer_output)
        self._train_value(index, ids, encoded.prompt_len)

    def _place_key(self, key: torch.Tensor, label: str, layer_output: torch.Tensor) -> int:
        """Add ``key`` to the codebook, or grow the nearest key of the same object; the index whose value is trained."""
        book, eps = self.codebook, self.hparams.eps
        initial = torch.rand_like(layer_output) if self.hparams.val_init == "cold" else layer_output.clone()
        if book.labels:
            distance, nearest = (float(t) for t in book.nearest(key.unsqueeze(0)))
            nearest = int(nearest)
            if distance <= eps + float(book.radii[nearest]):
                if book.labels[nearest] == label:  # the same object: cover the new key with the old one's radius
                    book.radii[nearest] = max(float(book.radii[nearest]), distance)
                    return nearest
                book.radii[nearest] = distance / 2 - RADIUS_SPLIT_MARGIN  # another object: split the space between them
                self._add(key, initial, distance / 2, label)
                return len(book.labels) - 1
        self._add(key, initial, eps, label)
        return len(book.labels) - 1

    def _add(self, key: torch.Tensor, value: torch.Tensor, radius: float, label: str) -> None:
        book = self.codebook
        book.keys = torch.cat([book.keys, key.unsqueeze(0)])
        book.values = torch.cat([book.values, value.unsqueeze(0)])
        book.radii = torch.cat([book.radii, torch.tensor([radius], device=book.radii.device)])
        book.labels.append(label)

    def _train_value(self, index: int, ids: torch.Tensor, prompt_len: int) -> None:
        """Adam on the value at ``index`` alone: the loss on the object's tokens with the codebook in place."""
        hp, model, book = self.hparams, self.loaded.model, self.codebook
        value = book.values[index].detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([value], lr=hp.edit_lr)
        targets = ids[0, prompt_len:]

        def patched(output: torch.Tensor, inputs: tuple, name: str) -> torch.Tensor:
            values = torch.cat([book.values[:index], value.unsqueeze(0), book.values[index + 1:]])
            return book(inputs, output, values=values)

        for _step in range(hp.n_iter):
            optimizer.zero_grad()
            with Trace(model, self.module, retain_output=False, edit_output_from_input=patched):
                logits = model(input_ids=ids).logits
            log_probs = torch.log_softmax(logits[0, prompt_len - 1:-1].float(), dim=-1)
            loss = -log_probs.gather(1, targets.unsqueeze(1)).mean()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            book.values[index] = value.detach().to(book.values.dtype)
