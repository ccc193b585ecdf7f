"""Greedy answers: what the model says after a prompt, through the same forward path as scoring.

Teacher-forced scores feed the model the answer's tokens; a generated answer is what the model says itself
(arXiv 2502.11177 measured published editing success far lower this way). :class:`Generator` answers a batch of
prompts greedily, left-padded, with a key/value cache, through the model body and the head on the last position
only (``scoring.vocabulary_logits``), so a weight edit, a module editor's patches (forward hooks) and a context
editor's context (``InstalledContext``, applied to every prompt) are all in force, as they are when scoring.

:func:`says` decides whether an answer names a label: both are normalised (Unicode NFKC, case folded,
punctuation to spaces, whitespace collapsed, a leading article "a", "an" or "the" dropped) and the answer must
start with the label, followed by the end or a word boundary ("Paris" is said by "Paris, the capital", not by
"Parisian"). Asked only whether an answer says some labels, the generator stops a row as soon as no further text can
change that (:func:`settled`), so the recorded answer ends there.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from pitfalls_editkit.contexts import InstalledContext
from pitfalls_editkit.scoring import pad_batch, vocabulary_logits

ARTICLES = ("a", "an", "the")
_NOT_WORD = re.compile(r"[^\w]+")
_ENDS_A_WORD = frozenset(string.punctuation) - {"_"}  # ASCII punctuation; "_" is a word character


def normalise(text: str) -> str:
    """Case-folded words of ``text`` separated by one space, without punctuation or a leading article."""
    words = _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split()
    if len(words) > 1 and words[0] in ARTICLES:
        words = words[1:]
    return " ".join(words)


def says(answer: str, label: str, aliases: Sequence[str] = ()) -> bool:
    """Whether ``answer`` starts with ``label`` (or one of ``aliases``), normalised, at a word boundary."""
    said = normalise(answer)
    for name in (label, *aliases):
        wanted = normalise(name)
        if wanted and (said == wanted or said.startswith(wanted + " ")):
            return True
    return False


def settled(answer: str, labels: Sequence[str]) -> bool:
    """Whether no continuation of ``answer`` can change ``says(answer, label)`` for any of ``labels``.

    More text can only lengthen the normalised answer's last word or add words, and once it has two words, whether a
    leading article is dropped is decided too. The last word is complete once the text ends in whitespace or ASCII
    punctuation; otherwise a later character may still extend it or, composed with its last character by NFKC,
    change that one. So a label's verdict is final when the answer's complete words cover the label's, when one of
    them differs from the label's word at that place, or when the last word, less its last character, does not begin
    the label's word at that place ("Germ" can never become "france"; a first word that may still become an article,
    which would then be dropped, is the exception). Never while a character is half decoded (U+FFFD: its bytes
    continue in the next token), nor while the answer is a lone article.
    """
    if "\ufffd" in answer:
        return False
    words = normalise(answer).split()
    if len(words) == 1 and words[0] in ARTICLES:
        return False
    text = unicodedata.normalize("NFKC", answer)
    last_complete = bool(text) and (text[-1].isspace() or text[-1] in _ENDS_A_WORD)
    complete = words if last_complete else words[:-1]
    last, stem = len(words) - 1, words[-1][:-1] if words else ""
    # The last word is still growing; a first word that may become an article (then dropped) is left undecided.
    growing = bool(words) and not last_complete and not (last == 0 and any(a.startswith(stem) for a in ARTICLES))
    for label in labels:
        wanted = normalise(label).split()
        if len(complete) >= len(wanted) or any(a != b for a, b in zip(complete, wanted)):
            continue  # the words that decide are all final, or one of them already differs
        if growing and last < len(wanted) and not wanted[last].startswith(stem):
            continue  # the last word can no longer grow into the label's word
        return False
    return True


@dataclass
class Generator:
    """Greedy continuations of prompts on one model, batched (``max_rows`` prompts a pass), with a key/value cache."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    context: InstalledContext | None = None  # a context editor's edit in force: every prompt is given through it
    max_rows: int = 32

    @torch.no_grad()
    def answers(self, prompts: Sequence[str], max_new_tokens: int = 8, settle: Sequence[str] = ()) -> list[str]:
        """What the model says after each prompt: at most ``max_new_tokens`` tokens, cut at the end-of-text token
        and at the first line break; with ``settle`` (the labels the answers will be checked against with
        :func:`says`), also as soon as every verdict is :func:`settled`."""
        given = [self.context.prompt(p) if self.context is not None else p for p in prompts]
        out: list[str] = []
        for start in range(0, len(given), self.max_rows):
            out += self._batch(given[start : start + self.max_rows], max_new_tokens, settle)
        return out

    def _batch(self, prompts: Sequence[str], max_new_tokens: int, settle: Sequence[str]) -> list[str]:
        """Greedy steps for the rows still answering: a row that gave the end-of-text token or a line break (where its
        answer is cut), or whose verdicts on ``settle`` are final, leaves the batch, its cached keys and values with
        it, so later steps cost only the others."""
        tok, model = self.tokenizer, self.model
        device = next(model.parameters()).device
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        stop = tok.eos_token_id
        ids, mask, positions, _ = pad_batch([tok(p)["input_ids"] for p in prompts], pad_id, "left", device)
        rows = torch.arange(len(prompts), device=device)
        cache = DynamicCache()
        logits = vocabulary_logits(model, ids, mask, rows, torch.full_like(rows, ids.shape[1] - 1), positions, cache)
        produced: list[list[int]] = [[] for _ in prompts]
        answering = list(range(len(prompts)))  # the prompt of each row of the batch
        position = positions[:, -1]
        for step in range(max_new_tokens):
            chosen = logits.argmax(-1)
            going_on = []
            for row, token in enumerate(chosen.tolist()):
                tokens = produced[answering[row]]
                tokens.append(token)
                if token == stop or "\n" in tok.decode([token]):
                    continue
                if settle and settled(tok.decode(tokens, skip_special_tokens=True), settle):
                    continue
                going_on.append(row)
            if not going_on or step == max_new_tokens - 1:
                break
            if len(going_on) < len(answering):
                keep = torch.tensor(going_on, device=device)
                cache.batch_select_indices(keep)
                mask, position, chosen = mask[keep], position[keep], chosen[keep]
                answering = [answering[row] for row in going_on]
            rows = torch.arange(len(answering), device=device)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            position = position + 1
            logits = vocabulary_logits(model, chosen.unsqueeze(1), mask, rows, torch.zeros_like(rows), position.unsqueeze(1),
                                       cache)
        texts = []
        for tokens in produced:
            if stop is not None and stop in tokens:
                tokens = tokens[: tokens.index(stop)]
            texts.append(tok.decode(tokens, skip_special_tokens=True).split("\n")[0])
        return texts
