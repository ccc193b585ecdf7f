"""LogitMemory: a module editor that adds nothing to the weights and everything through one patch.

For each edit it stores the final hidden state at the prompt's last token (the LM head's input) as a key, and the
new object's first token. Its patch, on the LM head, raises that token's logit by ``boost`` wherever the head's
input lies within cosine ``similarity`` of a key; every other position is left exactly as it was. Written against
the public contract only (``ModuleEditor``, ``Patch``, ``Trace``), as a plugin author would.
"""

from __future__ import annotations

import torch

from pitfalls_editkit import ModuleEditor, Patch, Trace

BOOST = 12.0
SIMILARITY = 0.999


class KeyedBoost(Patch):
    def __init__(self, width: int, device: torch.device) -> None:
        super().__init__()
        self.register_buffer("keys", torch.zeros(0, width, device=device))
        self.register_buffer("tokens", torch.zeros(0, dtype=torch.long, device=device))

    def forward(self, inputs, output):
        hidden = torch.nn.functional.normalize(inputs[0].float(), dim=-1)
        similarity = hidden @ torch.nn.functional.normalize(self.keys.float(), dim=-1).T  # (..., keys)
        best, which = similarity.max(dim=-1)
        boost = torch.zeros_like(output)
        boost.scatter_(-1, self.tokens[which].unsqueeze(-1), BOOST)
        return torch.where((best >= SIMILARITY).unsqueeze(-1), output + boost, output)


class LogitMemory(ModuleEditor):
    name = "logit-memory"
    supports_batch = True

    def __init__(self, loaded, settings):
        super().__init__(loaded, settings)
        self.head = next(name for name, module in loaded.model.named_modules()
                         if module is loaded.model.get_output_embeddings())
        self.patch = None

    def model_restored(self):
        self.patch = None

    def apply(self, edits):
        model, tok = self.loaded.model, self.loaded.tokenizer
        if self.patch is None:
            self.patch = KeyedBoost(model.get_output_embeddings().weight.shape[1], self.loaded.device)
        for edit in edits:
            ids = torch.tensor([tok(edit.prompt)["input_ids"]], device=self.loaded.device)
            with torch.no_grad(), Trace(model, self.head, retain_input=True) as trace:
                model(input_ids=ids)
            key = trace.input[0, -1].detach()
            token = tok(" " + edit.new_object.label, add_special_tokens=False)["input_ids"][0]
            self.patch.keys = torch.cat([self.patch.keys, key.unsqueeze(0).float()])
            self.patch.tokens = torch.cat([self.patch.tokens, torch.tensor([token], device=self.loaded.device)])
        return {self.head: self.patch}
