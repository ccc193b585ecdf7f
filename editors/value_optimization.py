"""The value optimisation shared by ROME and MEMIT.

Find the vector that, written at the subject's last token of a module's
output, makes the model say the new object after every context template,
while keeping "{subject} is a" unchanged (KL) and the change small (weight
decay and an L2 clamp). ROME optimises the MLP output of its layer; MEMIT
the residual stream (layer output) of its last layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from editkit.facts import Edit, fill
from editkit.models import LoadedModel
from editkit.nethook import Trace
from editkit.scoring import encode_completion, pad_batch, vocabulary_logits
from editors.representations import subject_last_index

KL_TEMPLATES = ["{} is a"]
EARLY_STOP_LOSS = 5e-2


@dataclass(frozen=True)
class ValueObjective:
    num_steps: int
    lr: float
    weight_decay: float
    kl_factor: float
    clamp_norm_factor: float


def optimize_target(
    loaded: LoadedModel, edit: Edit, templates: list[str], module_name: str, objective: ValueObjective, reuse_prefix: bool = True
) -> torch.Tensor:
    """``v_init + delta``: the module's optimised output at the subject in the plain prompt.

    Each row is padded on the left so that its subject's last token sits in one
    column. Nothing left of that column depends on ``delta``, so with
    ``reuse_prefix`` those columns go through the model once, kept as a
    key/value cache, and each step runs only the columns from the subject on:
    the same result to float tolerance for a fraction of the arithmetic.
    ``reuse_prefix=False`` runs every column at every step (the plain way; the
    tests compare the two).
    """
    tok, model, device = loaded.tokenizer, loaded.model, loaded.device
    subject, prompt = edit.subject.label, edit.relation.prompt
    encoded = encode_completion(tok, edit.prompt, edit.new_object.label)
    target_ids = list(encoded.ids[encoded.prompt_len :])

    rewriting = [fill(t, prompt) for t in templates]
    sequences = [tok(fill(t, subject))["input_ids"] + target_ids[:-1] for t in rewriting]
    sequences += [tok(fill(t, subject))["input_ids"] for t in KL_TEMPLATES]
    lookup = [subject_last_index(tok, t, subject) for t in rewriting + KL_TEMPLATES]
    column = max(lookup)  # every row's subject-last token lands here
    shifts = [column - index for index in lookup]
    ids, mask, positions, _ = pad_batch([[tok.pad_token_id] * s + seq for s, seq in zip(shifts, sequences)], tok.pad_token_id, "right", device)
    for row, shift in enumerate(shifts):
        mask[row, :shift] = 0
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    start = column if reuse_prefix else 0
    prefix = None
    if start:
        with torch.no_grad():
            prefix = model.base_model(
                input_ids=ids[:, :start], attention_mask=mask[:, :start], position_ids=positions[:, :start], use_cache=True
            ).past_key_values

    # Logits needed (columns counted from ``start``): each rewriting row's target tokens, and the subject of the KL rows.
    rows, cols, targets = [], [], []
    for row, seq in enumerate(sequences[: len(rewriting)]):
        prompt_end = shifts[row] + len(seq) - len(target_ids)  # the column that predicts the first target token
        for j, token in enumerate(target_ids):
            rows.append(row)
            cols.append(prompt_end + j - start)
            targets.append(token)
    kl_rows = list(range(len(rewriting), len(sequences)))
    all_rows = torch.tensor(rows + kl_rows, device=device)
    all_cols = torch.tensor(cols + [column - start] * len(kl_rows), device=device)
    target_tensor = torch.tensor(targets, device=device)
    row_of_target = torch.tensor(rows, device=device)
    batch_rows = torch.arange(len(sequences), device=device)

    delta = torch.zeros(model.config.get_text_config().hidden_size, device=device, requires_grad=True)
    state: dict[str, torch.Tensor] = {}

    def add_delta(output: torch.Tensor, _name: str) -> torch.Tensor:
        if "init" not in state:  # recorded on the plain prompt (template "{}" comes first)
            state["init"] = output[0, column - start].detach().float().clone()
        output = output.clone()
        output[batch_rows, column - start] += delta.to(output.dtype)
        return output

    optimizer = torch.optim.Adam([delta], lr=objective.lr)
    kl_init = None
    for step in range(objective.num_steps):
        optimizer.zero_grad()
        with Trace(model, module_name, retain_output=False, edit_output=add_delta):
            cache = copy.deepcopy(prefix) if prefix is not None else None  # a step appends to the cache it is given
            logits = vocabulary_logits(model, ids[:, start:], mask, all_rows, all_cols, positions[:, start:], cache)
            log_probs = torch.log_softmax(logits, dim=-1)
        token_lp = log_probs[: len(targets)][torch.arange(len(targets), device=device), target_tensor]
        nll = (-torch.zeros(len(rewriting), device=device).index_add(0, row_of_target, token_lp) / len(target_ids)).mean()
        kl_lp = log_probs[len(targets) :]
        if kl_init is None:
            kl_init = kl_lp.detach().clone()
        kl = objective.kl_factor * torch.nn.functional.kl_div(kl_init, kl_lp, log_target=True, reduction="batchmean")
        decay = objective.weight_decay * (delta.norm() / state["init"].norm() ** 2)
        loss = nll + kl + decay
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss while optimising the value for {edit.describe()}")
        if loss.item() < EARLY_STOP_LOSS or step == objective.num_steps - 1:
            break
        loss.backward()
        optimizer.step()
        max_norm = objective.clamp_norm_factor * state["init"].norm()
        if delta.norm() > max_norm:
            with torch.no_grad():
                delta[...] = delta * max_norm / delta.norm()
    return state["init"] + delta.detach()
