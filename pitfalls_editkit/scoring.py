"""``P(o | prompt)`` and fact scores, as docs/METRICS.md defines them.

``P(o | p)`` is the geometric mean of the object's token probabilities after
the prompt; a fact's score is the plain mean of ``P`` over its prompt set.
All (prompt, object) pairs of a call go through the model in padded batches,
and only the positions that are needed are projected onto the vocabulary
(models such as Gemma have 262k-token vocabularies).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pitfalls_editkit.contexts import InstalledContext
from pitfalls_editkit.low_rank import LowRankUpdate, RowUpdates


def transformer_body(model: PreTrainedModel) -> torch.nn.Module:
    """The causal LM without its head, whose output has ``last_hidden_state``.

    ``base_model`` is it in transformers 5.x; in 4.x some classes (Gemma 3's
    causal LM) name a ``base_model_prefix`` they lack, so ``base_model`` is the
    whole model there, and ``get_decoder()`` (or, where that too follows the
    prefix, the usual ``model`` attribute) is the body.
    """
    body = model.base_model
    if body is model:
        body = model.get_decoder()
    if body is model:
        body = getattr(model, "model", model)
    return body


def cache_keyword(model: PreTrainedModel) -> str:
    """The body's name for a key/value cache argument: ``cache`` from transformers 5.x, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(transformer_body(model).forward).parameters else "past_key_values"


def vocabulary_logits(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rows: torch.Tensor,
    positions: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    past_key_values: Any = None,
) -> torch.Tensor:
    """Logits at ``(rows[i], positions[i])`` only: body forward, then the LM head on those states.

    The body's last hidden state is already final-normalised in every
    transformers causal LM; the head and Gemma-style soft-capping follow.
    With ``past_key_values`` (a transformers cache of the earlier columns),
    ``input_ids`` are the columns after them, ``positions`` index into those,
    and ``attention_mask`` covers both.
    """
    cached = {cache_keyword(model): past_key_values, "use_cache": True} if past_key_values is not None else {"use_cache": False}
    hidden = transformer_body(model)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **cached).last_hidden_state
    logits = model.get_output_embeddings()(hidden[rows, positions])
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


@dataclass(frozen=True)
class Encoded:
    ids: tuple[int, ...]  # prompt + object tokens
    prompt_len: int  # where the object's tokens start


def encode_completion(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str) -> Encoded:
    """Tokens of ``prompt + " " + completion``, split where the completion starts.

    The joint string is tokenized as the reference does; when its first tokens
    are the prompt's own, the rest are the completion's tokens (the same as
    ``tokenize(" " + o)`` for byte-level BPE, and correct for SentencePiece too).
    Otherwise the two tokenizations are concatenated.
    """
    prompt_ids = tokenizer(prompt)["input_ids"]
    joint = tokenizer(f"{prompt} {completion}")["input_ids"]
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return Encoded(tuple(joint), len(prompt_ids))
    target = tokenizer(" " + completion, add_special_tokens=False)["input_ids"]
    return Encoded(tuple(prompt_ids) + tuple(target), len(prompt_ids))


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, side: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Pad to one length; returns ids, mask, position ids and each row's offset of its first token."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    offsets = []
    for row, seq in enumerate(sequences):
        start = width - len(seq) if side == "left" else 0
        ids[row, start : start + len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, start : start + len(seq)] = 1
        offsets.append(start)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device), offsets


@dataclass
class Scorer:
    """Scores objects after prompts on one model, batched."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    padding_side: str = "right"
    max_rows: int = 64  # (prompt, object) pairs per forward pass
    context: InstalledContext | None = None  # a context editor's edit in force: every prompt is given through it
    _encoded: dict[tuple[str, str], Encoded] = field(default_factory=dict, repr=False)

    def max_tokens(self) -> int:
        """The longest input the model takes (its position embeddings); very large when it sets none."""
        config = self.model.config.get_text_config()
        return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 1 << 30)

    def encode(self, prompt: str, obj: str) -> Encoded:
        """``prompt + " " + obj`` as the scorer tokenizes it (cached)."""
        return self._encode(prompt, obj)

    def _encode(self, prompt: str, obj: str) -> Encoded:
        key = (prompt, obj)
        if key not in self._encoded:
            self._encoded[key] = encode_completion(self.tokenizer, prompt, obj)
        return self._encoded[key]

    def object_probabilities(self, prompts: Sequence[str], objects: Sequence[str]) -> np.ndarray:
        """``P(o | p)`` for every prompt (rows) and object (columns)."""
        return self.pair_probabilities([(p, o) for p in prompts for o in objects]).reshape(len(prompts), len(objects))

    @torch.no_grad()
    def pair_probabilities(self, labels: Sequence[tuple[str, str]], row_updates: RowUpdates | None = None,
                           groups: Sequence[int] | None = None) -> np.ndarray:
        """``P(o | p)`` for every ``(p, o)``, in padded batches of ``max_rows``.

        With ``row_updates`` (hooks already on the model), pair ``i`` is scored on the model with ``groups[i]``'s update.
        """
        if self.context is not None and self.context.current is not None:
            labels = [(self.context.prompt(p), o) for p, o in labels]
        pairs = [self._encode(p, o) for p, o in labels]
        too_long = max((len(e.ids) for e in pairs), default=0)
        if too_long > self.max_tokens():
            raise ValueError(f"a scored text is {too_long} tokens, longer than this model takes ({self.max_tokens()}); "
                             "a context editor's context is too long for it (fewer demonstrations, or a shorter --sequential "
                             "segment: a chain's edits are all stated)")
        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        probs = np.empty(len(pairs), dtype=np.float64)
        for start in range(0, len(pairs), self.max_rows):
            chunk = pairs[start : start + self.max_rows]
            ids, mask, position_ids, offsets = pad_batch([e.ids for e in chunk], pad_id, self.padding_side, device)
            if row_updates is not None:
                row_updates.groups = list(groups[start : start + len(chunk)])
            rows, cols, targets, owner = [], [], [], []
            for row, (enc, offset) in enumerate(zip(chunk, offsets)):
                for pos in range(enc.prompt_len, len(enc.ids)):
                    rows.append(row)
                    cols.append(offset + pos - 1)  # the logits that predict token ``pos``
                    targets.append(enc.ids[pos])
                    owner.append(row)
            logits = vocabulary_logits(
                self.model, ids, mask, torch.tensor(rows, device=device), torch.tensor(cols, device=device),
                position_ids if self.padding_side == "left" else None,
            )
            token_logp = torch.log_softmax(logits, dim=-1)[torch.arange(len(targets)), torch.tensor(targets, device=device)]
            if not torch.isfinite(token_logp).all():
                bad = owner[int((~torch.isfinite(token_logp)).nonzero()[0])]
                prompt, obj = labels[start + bad]
                raise FloatingPointError(f"the model gave NaN/inf log-probabilities for {obj!r} after {prompt!r}")
            sums = torch.zeros(len(chunk), dtype=torch.float64, device=device).index_add_(
                0, torch.tensor(owner, device=device), token_logp.double()
            )
            counts = torch.tensor([len(e.ids) - e.prompt_len for e in chunk], dtype=torch.float64, device=device)
            probs[start : start + len(chunk)] = torch.exp(sums / counts).cpu().numpy()
        return probs

    def fact_scores(self, prompts: Sequence[str], objects: Sequence[str]) -> list[float]:
        """``score(s, r, o)`` for each object: the mean of ``P(o | p)`` over the prompt set."""
        return [float(v) for v in self.object_probabilities(prompts, objects).mean(axis=0)]

    def many_fact_scores(self, facts: Sequence[tuple[Sequence[str], Sequence[str]]],
                         updates: Sequence[LowRankUpdate | None] | None = None) -> list[list[float]]:
        """:meth:`fact_scores` of several ``(prompts, objects)`` facts, all their pairs in the same batches.

        ``updates``: one per fact, the (low-rank) edit of the model that fact is scored on; the weights stay as they are.
        """
        labels = [(p, o) for prompts, objects in facts for p in prompts for o in objects]
        if updates is None:
            probs = self.pair_probabilities(labels)
        else:
            groups = [number for number, (prompts, objects) in enumerate(facts) for _ in range(len(prompts) * len(objects))]
            with RowUpdates(self.model, updates) as row_updates:
                probs = self.pair_probabilities(labels, row_updates, groups)
        result, start = [], 0
        for prompts, objects in facts:
            size = len(prompts) * len(objects)
            result.append([float(v) for v in probs[start : start + size].reshape(len(prompts), len(objects)).mean(axis=0)])
            start += size
        return result
