"""IKE: in-context knowledge editing (Zheng et al., 2023): the edit stated in the prompt, after demonstrations.

Written from the paper and EasyEdit's ``ike`` (our own code). The model is never changed: every prompt it is given
while the edit is in force reads

    <k demonstrations>New Fact: <edit prompt> <new object>
    Prompt: <the prompt>

and the object is scored after it, as the reference scores ``New Fact: {prompt} {target}\\nPrompt: {query}``.
A demonstration is one of the reference's three kinds, built from another edit of the dataset: *copy*
(``New Fact: p o*\\nPrompt: p o*\\n\\n``), *update* (the prompt a paraphrase of p) and *retain* (the prompt
another fact's, answered with its true object).

Where we differ, and why:

* The reference retrieves the k demonstrations nearest to the edit with a sentence-embedding model; a harness run
  has no such model (nothing is downloaded), so they are drawn at random, seeded by the case (torch's generator,
  which the harness seeds per edit), from the dataset's other edits, the kinds in turn. No demonstration shares a
  subject or an object with an edit in force (``unrelated_examples``): never the case's own facts.
* The reference states one edit per query. Several edits (a round trip, ``--mle``'s joint edit, a
  ``--sequential`` chain) are stated as one ``New Fact:`` line each, in the order they were made, and the
  demonstrations are drawn again at each edit so that none touches any fact in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pitfalls_editkit.contexts import Context
from pitfalls_editkit.contract import ContextEditor, EditorSettings, unrelated_examples
from pitfalls_editkit.facts import Edit, ExampleEdit, fill
from pitfalls_editkit.hparams import as_dict, bounded
from pitfalls_editkit.models import LoadedModel

DEMONSTRATION_KINDS = ("copy", "update", "retain")


@dataclass(frozen=True)
class IKEHyperParams:
    k: int = bounded(0)  # demonstrations before the edit (the references: 16 for GPT-2 XL, 32 for GPT-J and Llama)


class StatedEdits(Context):
    """The demonstrations and the edits in force, stated before every prompt."""

    def __init__(self) -> None:
        self.edits: list[Edit] = []
        self.demonstrations: list[str] = []

    def apply(self, prompt: str) -> str:
        facts = "".join(f"New Fact: {edit.prompt} {edit.new_object.label}\n" for edit in self.edits)
        return "".join(self.demonstrations) + facts + f"Prompt: {prompt}"


def demonstration(kind: str, example: ExampleEdit, other: ExampleEdit, paraphrase: int) -> str:
    """One demonstration of ``kind`` built on ``example`` (``other``: the retained fact; ``paraphrase``: which)."""
    edit = example.edit
    new_fact = f"{edit.prompt} {edit.new_object.label}"
    if kind == "update" and example.paraphrases:
        shown = f"{fill(example.paraphrases[paraphrase % len(example.paraphrases)], edit.subject.label)} {edit.new_object.label}"
    elif kind == "retain":
        shown = f"{other.edit.prompt} {other.edit.object.label}"
    else:
        shown = new_fact
    return f"New Fact: {new_fact}\nPrompt: {shown}\n\n"


class IKE(ContextEditor):
    name = "ike"
    supports_batch = True  # several edits stated together (--mle: every true object at once)

    def __init__(self, loaded: LoadedModel, settings: EditorSettings) -> None:
        super().__init__(loaded, settings)
        self.hparams_path, self.hparams = self.load_hparams(IKEHyperParams)
        self.context: StatedEdits | None = None

    def describe(self) -> dict[str, Any]:
        return {"hparams_file": str(self.hparams_path), "hparams": as_dict(self.hparams)}

    def model_restored(self) -> None:
        self.context = None  # the harness cleared it with the case (or the chain's segment)

    def apply(self, edits: Sequence[Edit]) -> StatedEdits:
        if self.context is None:
            self.context = StatedEdits()
        self.context.edits.extend(edits)
        self.context.demonstrations = self.draw(self.context.edits)
        return self.context

    def draw(self, in_force: Sequence[Edit]) -> list[str]:
        """``k`` demonstrations from the dataset's edits that share no entity with ``in_force`` (seeded by torch)."""
        k = self.hparams.k
        if k == 0:
            return []
        pool = unrelated_examples(self.settings, in_force)
        if len(pool) < k + 1:
            raise ValueError(f"IKE needs {k + 1} dataset edits unrelated to the edits in force for {k} demonstrations, "
                             f"found {len(pool)}; give a larger --dataset-dir or set k lower (--hparams-set k=...)")
        order = torch.randperm(len(pool)).tolist()
        paraphrases = torch.randint(0, 1 << 16, (k,)).tolist()
        return [demonstration(DEMONSTRATION_KINDS[i % len(DEMONSTRATION_KINDS)], pool[order[i]],
                              pool[order[(k + i) % len(pool)]], paraphrases[i]) for i in range(k)]
