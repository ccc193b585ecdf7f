"""Where facts live in the model: the subject's last token, and module inputs/outputs there."""

from __future__ import annotations

from typing import Any

import torch

from pitfalls_editkit.facts import fill
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import Trace
from pitfalls_editkit.scoring import pad_batch, transformer_body


def subject_last_index(tokenizer: Any, template: str, subject: str) -> int:
    """Index of the subject's last token in ``template.format(subject)``.

    As in the reference: a space before ``{}`` moves onto the subject, and the
    index is the length of the tokenized text up to the subject's end, minus one.
    """
    prefix = template[: template.index("{}")]
    if prefix.endswith(" "):
        prefix, subject = prefix[:-1], " " + subject
    return len(tokenizer(prefix + subject)["input_ids"]) - 1


@torch.no_grad()
def module_io_at(loaded: LoadedModel, texts: list[str], module_name: str, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A module's input and output (float32) at ``indices[i]`` of each text; the pass stops after the module."""
    tok = loaded.tokenizer
    ids, mask, _, _ = pad_batch([tok(t)["input_ids"] for t in texts], tok.pad_token_id, "right", loaded.device)
    with Trace(loaded.model, module_name, retain_input=True, stop=True) as trace:
        transformer_body(loaded.model)(input_ids=ids, attention_mask=mask)
    rows, cols = torch.arange(len(texts)), torch.tensor(indices)
    return trace.input[rows, cols].float(), trace.output[rows, cols].float()


def subject_io(loaded: LoadedModel, templates: list[str], subject: str, module_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Module input/output at the subject's last token of each ``template`` (with one ``{}``)."""
    return module_io_at(
        loaded, [fill(t, subject) for t in templates], module_name,
        [subject_last_index(loaded.tokenizer, t, subject) for t in templates],
    )
