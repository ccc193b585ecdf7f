"""LoRA: a low-rank adapter trained on the edit, through the ``peft`` library (``pip install '.[adapters]'``).

Written from EasyEdit's ``lora`` and peft's documentation (our own code). Each edit trains rank-``rank`` factors
``A`` and ``B`` at every target module with Adam, ``num_steps`` steps at ``lr``, on the loss of the new object's
tokens after the prompt (teacher-forced, the prompt masked). peft does the adapter's part as it does for everyone:
it injects its LoRA layers into the model for the training, and ``unload()`` takes them out again, leaving the
original modules (the same objects, the same tensors). What the edit leaves behind is one
:class:`AdapterPatch` per target module, computing what peft's layer computes in eval mode,
``output + lora_B(lora_A(x)) * lora_alpha / rank``, installed by the harness as a forward hook and removed
after the case: the model is bit-identical afterwards, with no peft attribute left on it. In a chain the next
edit trains on from the factors in force.

Where we differ from the reference, and why: the model stays in eval mode (the harness's contract), so
``lora_dropout`` is inactive while training; the loss has no end-of-text token after the object (the reference
appends the literal ``<|endoftext|>``, which is GPT-2's alone); EasyEdit's GPT-2 XL and GPT-J files name AdaLoRA
(``lora_type: adalora``), here every model gets plain LoRA with their rank, alpha, steps, learning rate and
target modules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pitfalls_editkit.contract import EditorSettings, ModuleEditor
from pitfalls_editkit.facts import Edit
from pitfalls_editkit.hparams import HyperParamsError, as_dict, bounded
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.patches import Patch
from pitfalls_editkit.scoring import encode_completion, vocabulary_logits

ADAPTER = "pitfalls_edit"  # peft's adapter name while training
LAYER_NUMBER = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class LoRAHyperParams:
    target_modules: list[str] = bounded(nonempty=True)  # module names or their last parts (q_proj, c_attn), as peft takes them
    layers: list[int]  # the layers whose target modules get adapters; [] for every layer
    rank: int = bounded(1)
    lora_alpha: float = bounded(above=0)
    lora_dropout: float = bounded(0, high=1)  # read as the reference's; inactive (the model stays in eval mode)
    num_steps: int = bounded(1)
    lr: float = bounded(above=0)
    weight_decay: float = bounded(0)


class AdapterPatch(Patch):
    """One module's trained factors: ``output + (x @ A.T @ B.T) * scaling``, as peft's LoRA layer in eval mode."""

    def __init__(self, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> None:
        super().__init__()
        self.register_buffer("lora_a", lora_a)
        self.register_buffer("lora_b", lora_b)
        self.scaling = scaling

    def forward(self, inputs: tuple[Any, ...], output: Any) -> Any:
        hidden = inputs[0].to(self.lora_a.dtype)
        return output + (torch.nn.functional.linear(torch.nn.functional.linear(hidden, self.lora_a), self.lora_b)
                         * self.scaling).to(output.dtype)


def target_names(model: torch.nn.Module, targets: Sequence[str], layers: Sequence[int]) -> list[str]:
    """The modules ``targets`` name (whole names or last parts), in ``layers`` when given."""
    found = []
    for name, _module in model.named_modules():
        if not any(name == t or name.endswith("." + t) for t in targets):
            continue
        number = LAYER_NUMBER.search(name)
        if layers and (number is None or int(number.group(1)) not in layers):
            continue
        found.append(name)
    return found


class LoRA(ModuleEditor):
    name = "lora"
    supports_batch = True  # several edits trained together, one loss over all (--mle)

    def __init__(self, loaded: LoadedModel, settings: EditorSettings) -> None:
        super().__init__(loaded, settings)
        try:
            import peft  # noqa: F401 - the dependency this editor is about
        except ImportError:
            raise HyperParamsError("editor 'lora' needs the peft library: pip install 'pitfalls-harness[adapters]' "
                                   "(or pip install peft)") from None
        self.hparams_path, self.hparams = self.load_hparams(LoRAHyperParams)
        hp = self.hparams
        layers = [n % loaded.num_layers for n in hp.layers]
        self.modules = target_names(loaded.model, hp.target_modules, layers)
        if not self.modules:
            raise HyperParamsError(f"{self.hparams_path}: target_modules {hp.target_modules} (layers {hp.layers or 'all'}) "
                                   f"name no module of {loaded.name}; give module names or their last parts")
        self.patches: dict[str, AdapterPatch] = {}

    def describe(self) -> dict[str, Any]:
        return {"hparams_file": str(self.hparams_path), "hparams": as_dict(self.hparams), "modules": len(self.modules)}

    def model_restored(self) -> None:
        self.patches = {}  # the harness removed them with the case (or the chain's segment)

    def apply(self, edits: Sequence[Edit]) -> dict[str, AdapterPatch]:
        from peft import LoraConfig, LoraModel

        hp, model = self.hparams, self.loaded.model
        flags = {name: p.requires_grad for name, p in model.named_parameters()}
        config = LoraConfig(r=hp.rank, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout, target_modules=self.modules)
        tuner = LoraModel(model, config, ADAPTER)
        try:
            layers = {name: tuner.model.get_submodule(name) for name in self.modules}
            with torch.no_grad():
                for name, patch in self.patches.items():  # a chain trains on from the factors in force
                    layers[name].lora_A[ADAPTER].weight.copy_(patch.lora_a)
                    layers[name].lora_B[ADAPTER].weight.copy_(patch.lora_b)
            self._train([p for layer in layers.values() for p in (layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight)],
                        edits)
            scaling = {name: float(layer.scaling[ADAPTER]) for name, layer in layers.items()}
            factors = {name: (layer.lora_A[ADAPTER].weight.detach().clone(), layer.lora_B[ADAPTER].weight.detach().clone())
                       for name, layer in layers.items()}
        finally:
            tuner.unload()  # peft's own removal: the original modules back in place
            if "peft_config" in model.__dict__:
                del model.peft_config
            for name, param in model.named_parameters():
                param.requires_grad_(flags[name])
        for name, (lora_a, lora_b) in factors.items():
            if name in self.patches:  # the same patch object, its factors replaced: the harness keeps it installed
                self.patches[name].lora_a, self.patches[name].lora_b = lora_a, lora_b
            else:
                self.patches[name] = AdapterPatch(lora_a, lora_b, scaling[name])
        return dict(self.patches)

    def _train(self, factors: list[torch.Tensor], edits: Sequence[Edit]) -> None:
        hp, model, tok, device = self.hparams, self.loaded.model, self.loaded.tokenizer, self.loaded.device
        optimizer = torch.optim.Adam(factors, lr=hp.lr, weight_decay=hp.weight_decay)
        encoded = [encode_completion(tok, edit.prompt, edit.new_object.label) for edit in edits]
        for _step in range(hp.num_steps):
            optimizer.zero_grad()
            loss = torch.zeros((), device=device)
            for enc in encoded:  # one sequence at a time: no padding to mask
                ids = torch.tensor([enc.ids], device=device)
                positions = torch.arange(enc.prompt_len - 1, len(enc.ids) - 1, device=device)  # those predicting the object
                logits = vocabulary_logits(model, ids, torch.ones_like(ids), torch.zeros_like(positions), positions)
                loss = loss + torch.nn.functional.cross_entropy(logits, ids[0, enc.prompt_len:]) / len(encoded)
            loss.backward()
            optimizer.step()
