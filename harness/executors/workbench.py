"""What every executor is given, and the pieces they share: a case's seed, its fit check, its record."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.guard import ModelGuard
from harness.original_scores import OriginalScores
from harness.records import CaseRecord
from pitfalls_benchmark.datasets import Case, Dataset, prompt_set
from pitfalls_benchmark.plans import PlanSettings, describe_pitfall, plan_of
from pitfalls_benchmark.splits import SPLITS
from pitfalls_editkit.contract import Editor
from pitfalls_editkit.facts import Relation, fill
from pitfalls_editkit.generation import Generator, says
from pitfalls_editkit.scoring import Scorer

CONTEXT_MARGIN_TOKENS = 64  # room left in the model's context for the prefixes editors put before a prompt

Paraphrases = dict[str, tuple[str, ...]]  # relation id -> extra prompt templates


GENERATED_METRICS = ("Succ", "CS_exp", "CS_imp", "IR", "FR")  # the metrics with a generated twin (0/1 and IR's share)


@dataclass
class GeneratedTwin:
    """--generation: the case's metrics from greedy answers (the plan run again on the shares of prompts that say
    each object), and every prompt with its answer."""

    values: dict[str, float]
    heard: list[str]


class CaseInputError(ValueError):
    """A case this model cannot score as given (a label too long for its context, an object without tokens)."""


def case_seed(base_seed: int, case_id: str) -> int:
    """A seed per case, stable across runs, workers and collection order."""
    return int.from_bytes(hashlib.sha256(f"{base_seed}:{case_id}".encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class WorkAhead:
    """Work done for a case before it ran (``--case-batch``): counted in its record, with a note."""

    edit_seconds: float = 0.0
    eval_seconds: float = 0.0
    note: str = ""


@dataclass(frozen=True)
class Workbench:
    """One worker's model and editor, as every executor uses them.

    ``paraphrases_of`` gives a loaded case's paraphrases (its dataset's prompt
    file); ``original_scores`` keeps the unedited model's scores on disk
    (None: always computed).
    """

    editor: Editor
    scorer: Scorer
    guard: ModelGuard
    seed: int = 0
    mle: bool = False
    paraphrases_of: Callable[[Case], Paraphrases] = lambda case: {}
    original_scores: OriginalScores | None = None
    generation: int | None = None  # --generation: new tokens a greedy answer may have (None: no generation)
    general: Any = None  # --general-ability: harness.general_ability.GeneralAbility (None: not measured)
    general_every: int = 10  # on a chain: edits between two measurements

    def general_ability(self) -> dict[str, float]:
        """The general-ability measures on the model as it is now (none when not asked for)."""
        return self.general.measure(self.editor.loaded, self.scorer) if self.general is not None else {}

    @classmethod
    def build(cls, editor: Editor, dataset: Dataset | None = None, guard: ModelGuard | None = None, **options) -> Workbench:
        """A workbench on the editor's model, outside pytest (tests, benchmarks): a new guard unless one is given;
        paraphrases from ``dataset``; ``options``: ``seed``, ``mle``, ``original_scores``."""
        loaded = editor.loaded
        return cls(editor, Scorer(loaded.model, loaded.tokenizer), guard or ModelGuard(loaded.model),
                   paraphrases_of=dataset.prompts_for if dataset is not None else (lambda case: {}), **options)

    def __post_init__(self) -> None:
        self.scorer.context = self.guard.context  # a context editor's edit, in force, is what every scoring call sees
        if self.mle and not self.editor.supports_batch:
            raise ValueError(f"--mle edits all true objects in one batch; editor {self.editor.name!r} cannot edit a batch")

    def settings(self, on_chain: bool = False) -> PlanSettings:
        return PlanSettings(mle=self.mle, on_chain=on_chain)

    def seed_of(self, case: Case) -> int:
        return case_seed(self.seed, case.case_id)

    def paraphrases(self, case: Case, given: Paraphrases | None = None) -> Paraphrases:
        """The paraphrases a case is scored with: ``given`` ones, else its dataset's (none for a hand-written case)."""
        if given is not None:
            return given
        return self.paraphrases_of(case) if case.source else {}

    def check_fits(self, case: Case, paraphrases: Paraphrases) -> None:
        """Every text the case scores must fit the model, with room for context templates; every object must have tokens."""
        limit = self.scorer.max_tokens() - CONTEXT_MARGIN_TOKENS
        for fact in plan_of(case).facts_scored(case):
            obj = fact.object.label
            for template in (fact.relation.prompt, *paraphrases.get(fact.relation.id, ())):
                encoded = self.scorer.encode(fill(template, fact.subject.label), obj)
                if len(encoded.ids) == encoded.prompt_len:
                    raise CaseInputError(f"case {case.case_id}: object {obj!r} has no tokens for this model's tokenizer")
                if len(encoded.ids) > limit:
                    raise CaseInputError(
                        f"case {case.case_id}: {fill(template, fact.subject.label)[:60]!r} + {obj[:40]!r} is {len(encoded.ids)} "
                        f"tokens; this model takes {limit} here ({CONTEXT_MARGIN_TOKENS} kept for context templates)")

    def score(self, paraphrases: Paraphrases, subject: str, relation: Relation, objects: Sequence[str],
              from_disk: bool = False) -> list[float]:
        """Scores of ``objects`` for the fact on the model as it is; ``from_disk``: it is the unedited one (kept on disk)."""
        prompts = prompt_set(relation, subject, paraphrases)
        if from_disk and self.original_scores is not None:
            return self.original_scores.scores(prompts, list(objects), lambda: self.scorer.fact_scores(prompts, list(objects)))
        return self.scorer.fact_scores(prompts, list(objects))

    def said(self, paraphrases: Paraphrases, subject: str, relation: Relation, objects: Sequence[str],
             heard: list[str], from_disk: bool = False) -> list[float]:
        """--generation: for each object, the share of the fact's prompts whose greedy answer says it (``says``); each
        prompt and answer is appended to ``heard``. ``from_disk``: the model is the unedited one (answers kept on disk)."""
        prompts = prompt_set(relation, subject, paraphrases)
        new_tokens = self.generation or 1

        def generate() -> list[str]:
            return Generator(self.scorer.model, self.scorer.tokenizer, self.guard.context).answers(prompts, new_tokens,
                                                                                                  settle=objects)

        if from_disk and self.original_scores is not None:
            answers = self.original_scores.answers(prompts, new_tokens, generate, settle=objects)
        else:
            answers = generate()
        heard += [f"{prompt} => {answer}" for prompt, answer in zip(prompts, answers)]
        return [sum(says(answer, obj) for answer in answers) / len(answers) for obj in objects]

    def record(self, case: Case, seed: int, scores: dict, values: dict[str, float], notes: list[str], seconds_edit: float,
               seconds_eval: float, applied: list[str], generated: GeneratedTwin | None = None) -> CaseRecord:
        """The case's record, with its pitfall decided; a NaN metric is an error, never a result."""
        for name, value in values.items():
            if value != value:  # NaN
                raise FloatingPointError(f"case {case.case_id}: metric {name} is NaN (scores {scores})")
        pitfall = SPLITS[case.split].shows_pitfall(values)
        twin = {}
        if generated is not None:
            twin = {k: v for k, v in generated.values.items() if k in GENERATED_METRICS}
        return CaseRecord(
            generation_metrics=twin, generation_pitfall=SPLITS[case.split].shows_pitfall(twin) if generated else None,
            generated=generated.heard if generated else [],
            case_id=case.case_id, benchmark=case.benchmark, split=case.split, index=case.index, group=case.group, seed=seed,
            scores=scores, metrics=values, pitfall=pitfall, pitfall_message=describe_pitfall(case.split, values, scores) if pitfall else "",
            seconds_edit=round(seconds_edit, 3), seconds_eval=round(seconds_eval, 3),
            edits=list(applied), notes=notes, device=str(self.editor.loaded.device), threads=torch.get_num_threads(),
        )
