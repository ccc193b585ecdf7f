"""The value optimisation shared by ROME and MEMIT.

Find the vector that, written at the subject's last token of a module's
output, makes the model say the new object after every context template,
while keeping "{subject} is a" unchanged (KL) and the change small (weight
decay and an L2 clamp). ROME optimises the MLP output of its layer; MEMIT
the residual stream (layer output) of its last layer.

Several edits on the same model are optimised together (MEMIT's batch, and
case batching's first edits): one forward/backward over all their rows per
step, one delta per edit. The deltas do not interact (each edit's loss sees
only its rows; Adam is elementwise) and each edit stops on its own, so the
result is each edit's single optimisation to float tolerance.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from editors.representations import subject_last_index
from pitfalls_editkit.facts import Edit, fill
from pitfalls_editkit.low_rank import LowRankUpdate, RowUpdates
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import Trace
from pitfalls_editkit.scoring import cache_keyword, encode_completion, pad_batch, transformer_body, vocabulary_logits

KL_TEMPLATES = ["{} is a"]
EARLY_STOP_LOSS = 5e-2


@dataclass(frozen=True)
class ValueObjective:
    num_steps: int
    lr: float
    weight_decay: float
    kl_factor: float
    clamp_norm_factor: float

    @classmethod
    def from_hparams(cls, hp: Any) -> ValueObjective:
        """From an editor's hyper-parameters, which name these fields as the reference does (``v_num_grad_steps``, ...)."""
        return cls(hp.v_num_grad_steps, hp.v_lr, hp.v_weight_decay, hp.kl_factor, hp.clamp_norm_factor)


def optimize_target(
    loaded: LoadedModel, edit: Edit, templates: list[str], module_name: str, objective: ValueObjective, reuse_prefix: bool = True
) -> torch.Tensor:
    """``v_init + delta``: the module's optimised output at the subject in the plain prompt (one edit)."""
    return optimize_targets(loaded, [edit], templates, module_name, objective, reuse_prefix)[0]


def optimize_targets(
    loaded: LoadedModel, edits: Sequence[Edit], templates: list[str], module_name: str, objective: ValueObjective,
    reuse_prefix: bool = True, bases: Sequence[LowRankUpdate | None] | None = None,
) -> torch.Tensor:
    """``(len(edits), hidden)``: each edit's ``v_init + delta``, optimised in one batch.

    ``bases``: one per edit, the update already made to the model that edit is
    optimised on (its case's earlier edits), added to its rows through hooks
    while the weights stay as they are.

    Each row is padded on the left so that its subject's last token sits in one
    column. Nothing left of that column depends on the deltas, so with
    ``reuse_prefix`` those columns go through the model once, kept as a
    key/value cache, and each step runs only the columns from the subject on:
    the same result to float tolerance for a fraction of the arithmetic.
    ``reuse_prefix=False`` runs every column at every step (the plain way; the
    tests compare the two).
    """
    tok, model, device = loaded.tokenizer, loaded.model, loaded.device
    sequences: list[list[int]] = []
    lookup: list[int] = []
    edit_of_row: list[int] = []
    first_row: list[int] = []  # each edit's plain-prompt row (template "{}" comes first): where v_init is read
    targets_of_edit: list[list[int]] = []
    for number, edit in enumerate(edits):
        subject = edit.subject.label
        encoded = encode_completion(tok, edit.prompt, edit.new_object.label)
        target_ids = list(encoded.ids[encoded.prompt_len :])
        targets_of_edit.append(target_ids)
        rewriting = [fill(t, edit.relation.prompt) for t in templates]
        first_row.append(len(sequences))
        sequences += [tok(fill(t, subject))["input_ids"] + target_ids[:-1] for t in rewriting]
        sequences += [tok(fill(t, subject))["input_ids"] for t in KL_TEMPLATES]
        lookup += [subject_last_index(tok, t, subject) for t in rewriting + KL_TEMPLATES]
        edit_of_row += [number] * (len(rewriting) + len(KL_TEMPLATES))
    column = max(lookup)  # every row's subject-last token lands here
    shifts = [column - index for index in lookup]
    ids, mask, _, _ = pad_batch([[tok.pad_token_id] * s + seq for s, seq in zip(shifts, sequences)], tok.pad_token_id, "right", device)
    for row, shift in enumerate(shifts):
        mask[row, :shift] = 0
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    edit_rows = torch.tensor(edit_of_row, device=device)
    with RowUpdates(model, bases or []) as row_updates:  # no hooks without bases; before the delta's hook: bases are in v_init
        row_updates.groups = edit_rows
        start = column if reuse_prefix else 0
        prefix = None
        if start:
            with torch.no_grad():
                out = transformer_body(model)(input_ids=ids[:, :start], attention_mask=mask[:, :start], position_ids=positions[:, :start],
                                       use_cache=True)
                prefix = out[cache_keyword(model)]

        # Logits needed (columns counted from ``start``): each rewriting row's target tokens, and the subject of the KL rows.
        rows, cols, tokens, weights = [], [], [], []
        kl_rows = []
        for row, seq in enumerate(sequences):
            number = edit_of_row[row]
            target_ids = targets_of_edit[number]
            if row - first_row[number] >= len(templates):
                kl_rows.append(row)
                continue
            prompt_end = shifts[row] + len(seq) - len(target_ids)  # the column that predicts the first target token
            for j, token in enumerate(target_ids):
                rows.append(row)
                cols.append(prompt_end + j - start)
                tokens.append(token)
                weights.append(1.0 / (len(target_ids) * len(templates)))  # mean over templates of the per-token mean
        n_edits, n_targets = len(edits), len(tokens)
        all_rows = torch.tensor(rows + kl_rows, device=device)
        all_cols = torch.tensor(cols + [column - start] * len(kl_rows), device=device)
        token_tensor = torch.tensor(tokens, device=device)
        weight_tensor = torch.tensor(weights, device=device)
        edit_of_target = torch.tensor([edit_of_row[r] for r in rows], device=device)
        edit_of_kl = torch.tensor([edit_of_row[r] for r in kl_rows], device=device)
        batch_rows = torch.arange(len(sequences), device=device)

        delta = torch.zeros(n_edits, model.config.get_text_config().hidden_size, device=device, requires_grad=True)
        state: dict[str, torch.Tensor] = {}

        def add_delta(output: torch.Tensor, _name: str) -> torch.Tensor:
            if "init" not in state:  # recorded in the first pass, before any delta counts
                state["init"] = output[first_row, column - start].detach().float().clone()
            output = output.clone()
            output[batch_rows, column - start] += delta[edit_rows].to(output.dtype)
            return output

        optimizer = torch.optim.Adam([delta], lr=objective.lr)
        kl_init = None
        done = torch.zeros(n_edits, dtype=torch.bool, device=device)
        final = torch.zeros_like(delta)
        for step in range(objective.num_steps):
            optimizer.zero_grad()
            with Trace(model, module_name, retain_output=False, edit_output=add_delta):
                cache = copy.deepcopy(prefix) if prefix is not None else None  # a step appends to the cache it is given
                logits = vocabulary_logits(model, ids[:, start:], mask, all_rows, all_cols, positions[:, start:], cache)
                log_probs = torch.log_softmax(logits, dim=-1)
            token_lp = log_probs[:n_targets][torch.arange(n_targets, device=device), token_tensor]
            nll = -torch.zeros(n_edits, device=device).index_add(0, edit_of_target, token_lp * weight_tensor)
            kl_lp = log_probs[n_targets:]
            if kl_init is None:
                kl_init = kl_lp.detach().clone()
            kl_per_row = torch.nn.functional.kl_div(kl_init, kl_lp, log_target=True, reduction="none").sum(-1)
            kl = objective.kl_factor * torch.zeros(n_edits, device=device).index_add(0, edit_of_kl, kl_per_row) / len(KL_TEMPLATES)
            init_norms = state["init"].norm(dim=1)
            decay = objective.weight_decay * (delta.norm(dim=1) / init_norms**2)
            losses = nll + kl + decay
            values = losses.detach()
            if not torch.isfinite(values[~done]).all():
                bad = int(torch.nonzero(~torch.isfinite(values) & ~done)[0])
                raise FloatingPointError(f"non-finite loss while optimising the value for {edits[bad].describe()}")
            stopping = ~done & ((values < EARLY_STOP_LOSS) | (step == objective.num_steps - 1))
            with torch.no_grad():
                final[stopping] = delta[stopping]
            done |= stopping
            if bool(done.all()):
                break
            losses[~done].sum().backward()
            optimizer.step()
            with torch.no_grad():
                delta[done] = final[done]  # finished edits keep the delta their loss was judged on
                max_norms = objective.clamp_norm_factor * init_norms
                norms = delta.norm(dim=1)
                over = ~done & (norms > max_norms)
                delta[over] = delta[over] * (max_norms[over] / norms[over]).unsqueeze(1)
        return state["init"] + final


class PreparedTargets:
    """Targets optimised ahead (``Editor.prepare``) for edits that will each be applied to the model as it is now.

    Valid while the model is in the state they were computed on: from
    :meth:`prepare` or :meth:`model_restored` until :meth:`model_changed`.
    Edits without a valid prepared target are optimised when asked for.
    """

    def __init__(self) -> None:
        self._targets: dict[tuple[Edit, str], torch.Tensor] = {}
        self._valid = False

    def prepare(self, loaded: LoadedModel, edits: Sequence[Edit], templates: list[str], module_name: str, objective: ValueObjective) -> None:
        self._targets = dict(zip(((e, module_name) for e in edits), optimize_targets(loaded, edits, templates, module_name, objective)))
        self._valid = True

    def targets(self, loaded: LoadedModel, edits: Sequence[Edit], templates: list[str], module_name: str,
                objective: ValueObjective, bases: Sequence[LowRankUpdate | None] | None = None) -> torch.Tensor:
        """``(len(edits), hidden)``: prepared targets where valid, the others optimised now (together).

        ``bases``: per edit, an update the model it is optimised on carries beyond the weights (prepared targets
        hold for edits without one).
        """
        bases = list(bases) if bases is not None else [None] * len(edits)
        ready = {i: self._targets.pop((e, module_name)) for i, e in enumerate(edits)
                 if bases[i] is None and self._valid and (e, module_name) in self._targets}
        missing = [i for i in range(len(edits)) if i not in ready]
        if missing:
            fresh = optimize_targets(loaded, [edits[i] for i in missing], templates, module_name, objective,
                                     bases=[bases[i] for i in missing])
            ready.update(zip(missing, fresh))
        return torch.stack([ready[i] for i in range(len(edits))])

    def model_changed(self) -> None:
        self._valid = False

    def model_restored(self) -> None:
        self._valid = bool(self._targets)
