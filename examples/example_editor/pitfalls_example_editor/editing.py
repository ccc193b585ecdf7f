"""An editor written only against the public contract (``pitfalls_editkit``): the README's "Writing an editor" example.

It fine-tunes one MLP output projection with Adam until the rewrite prompt
continues with the new object. Install with ``pip install -e examples/example_editor``,
then ``pytest suites/ --editor example-ft`` (its entry point) or
``pytest suites/ --editor pitfalls_example_editor.editing:OneLayerFT``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pitfalls_editkit import Editor, encode_completion, get_module, module_name, vocabulary_logits


@dataclass(frozen=True)
class OneLayerFTHyperParams:
    layer: int
    module_tmp: str  # e.g. "model.layers.{}.mlp.down_proj"; the one {} is the layer
    steps: int
    lr: float


class OneLayerFT(Editor):
    name = "example-ft"
    supports_batch = True

    def __init__(self, loaded, settings):
        super().__init__(loaded, settings)
        self.hparams_file, self.hparams = self.load_hparams(OneLayerFTHyperParams)  # hparams/<model or family>.json

    def declared_parameters(self):
        return [f"{module_name(self.hparams.module_tmp, self.hparams.layer)}.weight"]

    def describe(self):
        return {"hparams_file": str(self.hparams_file), "hparams": vars(self.hparams)}

    def apply(self, edits):
        model, tok, device = self.loaded.model, self.loaded.tokenizer, self.loaded.device
        weight = get_module(model, module_name(self.hparams.module_tmp, self.hparams.layer)).weight
        encoded = [encode_completion(tok, edit.prompt, edit.new_object.label) for edit in edits]
        optimizer = torch.optim.Adam([weight], lr=self.hparams.lr)
        weight.requires_grad_(True)
        try:
            for _ in range(self.hparams.steps):
                optimizer.zero_grad()
                loss = 0.0
                for enc in encoded:  # next-token loss on the object's tokens, one example at a time
                    ids = torch.tensor([enc.ids[:-1]], device=device)
                    positions = torch.arange(enc.prompt_len - 1, len(enc.ids) - 1, device=device)
                    logits = vocabulary_logits(model, ids, torch.ones_like(ids), torch.zeros_like(positions), positions)
                    targets = torch.tensor(enc.ids[enc.prompt_len:], device=device)
                    loss = loss + torch.nn.functional.cross_entropy(logits, targets)
                loss.backward()
                optimizer.step()
        finally:
            weight.requires_grad_(False)  # the contract: leave requires_grad as it was
