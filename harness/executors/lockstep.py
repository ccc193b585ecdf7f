"""``--case-batch K``: K cases started together on the unedited model.

:func:`start_batch` runs on a batch's first case. It scores the unedited-model
facts of every case of the batch not yet on disk in one batched call; then,
when the editor can compute its updates (``can_compute_updates``), it runs
the K cases together (:func:`run_together`); otherwise, when it can work ahead
(``can_prepare``), it works out their first edits in one ``Editor.prepare``
call. The :class:`BatchStart` it returns holds the records of the cases run
together and the work done ahead, which the batch's first case run alone
counts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.executors.workbench import CaseInputError, Paraphrases, WorkAhead, Workbench
from harness.guard import EditFailure, ModelDamaged, check_updates
from harness.records import CaseRecord
from pitfalls_benchmark.datasets import Case, prompt_set
from pitfalls_benchmark.plans import Apply, Plan, Restart, Score, Step, first_edits_of, plan_of
from pitfalls_editkit.low_rank import LowRankUpdate, combined


@dataclass
class BatchStart:
    """What a batch's start produced: records of cases run together (by case id), and the work done ahead."""

    outcomes: dict[str, CaseRecord | Exception] = field(default_factory=dict)
    ahead: WorkAhead | None = None

    def take(self, case_id: str) -> CaseRecord | Exception | None:
        """The outcome of a case run together, once."""
        return self.outcomes.pop(case_id, None)

    def take_ahead(self) -> WorkAhead | None:
        """The work done ahead, counted by the first case that runs alone (once)."""
        ahead, self.ahead = self.ahead, None
        return ahead


def start_batch(bench: Workbench, cases: Sequence[Case]) -> BatchStart:
    """Start a batch of cases that each edit the unedited model (see the module docstring)."""
    scored, eval_seconds = score_originals_together(bench, cases)
    scored_note = f"; {scored} unedited-model facts scored together" if scored else ""
    note = ""
    if bench.editor.can_compute_updates:
        try:
            outcomes, _ = bench.guard.without_changes(bench.editor, "compute_updates()", f"{len(cases)} cases",
                                                      lambda: run_together(bench, cases), bench.seed_of(cases[0]))
            return BatchStart(outcomes, WorkAhead(eval_seconds=eval_seconds))
        except ModelDamaged:
            raise
        except EditFailure as exc:  # the cases run one at a time, as without --case-batch
            note = f"ran one at a time instead of together: {exc}"
    edits = first_edits_of(cases, bench.settings())
    if bench.editor.can_prepare and edits:
        seconds = bench.guard.prepare(bench.editor, edits, bench.seed_of(cases[0]))
        return BatchStart(ahead=WorkAhead(seconds, eval_seconds, f"worked out the first edits of {len(cases)} cases ahead "
                                                                  f"(--case-batch): {seconds:.2f} s counted here{scored_note}"))
    if not note and not (bench.editor.can_prepare or bench.editor.can_compute_updates):
        note = (f"ran one at a time: editor {bench.editor.name!r} ({bench.editor.kind}) offers neither prepare() nor "
                f"compute_updates(), so --case-batch only scored the unedited model's facts together{scored_note}")
    return BatchStart(ahead=WorkAhead(eval_seconds=eval_seconds, note=note))


def score_originals_together(bench: Workbench, cases: Sequence[Case]) -> tuple[int, float]:
    """The unedited model's facts of ``cases`` not yet on disk, scored in one batched call and stored; (how many, seconds)."""
    originals = bench.original_scores
    if originals is None:
        return 0, 0.0
    wanted: dict[str, tuple[list[str], list[str]]] = {}
    for case in cases:
        paraphrases = bench.paraphrases(case)
        try:
            bench.check_fits(case, paraphrases)
        except CaseInputError:
            continue  # the case reports it when it runs
        for subject, relation, objects in plan_of(case).original_facts(case):
            prompts = prompt_set(relation, subject, paraphrases)
            if not originals.has(prompts, objects):
                wanted[originals.key(prompts, objects)] = (prompts, objects)
    if not wanted:
        return 0, 0.0
    start = time.perf_counter()
    for (prompts, objects), scores in zip(wanted.values(), bench.scorer.many_fact_scores(list(wanted.values()))):
        originals.store(prompts, objects, scores)
    return len(wanted), time.perf_counter() - start


@dataclass
class _Running:
    """A case carried out with others: its plan, where it stands, and its model's update so far."""

    case: Case
    seed: int
    plan: Plan
    paraphrases: Paraphrases
    step: Step | None = None
    answer: Any = None
    update: LowRankUpdate | None = None
    applied: list[str] = field(default_factory=list)
    edit_seconds: float = 0.0
    eval_seconds: float = 0.0


def run_together(bench: Workbench, cases: Sequence[Case]) -> dict[str, CaseRecord | Exception]:
    """All ``cases`` in lockstep on the original weights (the editor offers ``compute_updates``).

    Each case's edited model is its own sum of low-rank updates, seen by its
    rows only (:class:`pitfalls_editkit.low_rank.RowUpdates`). At every step the cases
    that edit are computed in one ``compute_updates`` call, and the cases that
    score in one batched scoring call. Returns each case's record, or the
    exception it raised.
    """
    outcomes: dict[str, CaseRecord | Exception] = {}
    running: list[_Running] = []
    for case in cases:
        paraphrases = bench.paraphrases(case)
        try:
            bench.check_fits(case, paraphrases)
        except CaseInputError as exc:
            outcomes[case.case_id] = exc
            continue
        seed = bench.seed_of(case)
        one = _Running(case, seed, plan_of(case).steps(case, seed, bench.settings()), paraphrases)
        one.step = next(one.plan)
        running.append(one)
    while running:
        applying = [t for t in running if isinstance(t.step, Apply)]
        if applying:
            start = time.perf_counter()
            updates = bench.editor.compute_updates([list(t.step.edits) for t in applying], [t.update for t in applying])
            check_updates(bench.editor, updates, len(applying))
            share = (time.perf_counter() - start) / len(applying)
            for t, update in zip(applying, updates):
                t.update = combined(t.update, update)
                t.applied += [e.describe() for e in t.step.edits]
                t.edit_seconds += share
        scoring = [t for t in running if isinstance(t.step, Score)]
        if scoring:
            start = time.perf_counter()
            answers = _score_together(bench, scoring)
            share = (time.perf_counter() - start) / len(scoring)
            for t, answer in zip(scoring, answers):
                t.answer = answer
                t.eval_seconds += share
        still = []
        for t in running:
            if isinstance(t.step, Restart):
                t.update = None
            answer, t.answer = t.answer, None
            try:
                t.step = t.plan.send(answer)
                still.append(t)
                continue
            except StopIteration as done:
                scores, values, notes = done.value
            except Exception as exc:  # this case's own failure: the others go on
                outcomes[t.case.case_id] = exc
                continue
            notes.append(f"run together with the {len(cases)} cases of its batch (--case-batch): edit and scoring "
                         "seconds are its share of the batch's")
            try:
                outcomes[t.case.case_id] = bench.record(t.case, t.seed, scores, values, notes, t.edit_seconds, t.eval_seconds, t.applied)
            except FloatingPointError as exc:  # a NaN metric: this case's error, as when it runs alone
                outcomes[t.case.case_id] = exc
        running = still
    return outcomes


def _score_together(bench: Workbench, scoring: list[_Running]) -> list[list[float]]:
    """The facts the ``scoring`` cases ask for, each on its case's model, in one batched call (originals from disk)."""
    answers: list[list[float] | None] = [None] * len(scoring)
    wanted, updates, where = [], [], []
    for number, t in enumerate(scoring):
        step = t.step
        if step.original and t.update is None and bench.original_scores is not None:
            answers[number] = bench.score(t.paraphrases, step.subject, step.relation, step.objects, from_disk=True)
            continue
        wanted.append((prompt_set(step.relation, step.subject, t.paraphrases), list(step.objects)))
        updates.append(t.update)
        where.append(number)
    if wanted:
        for number, scores in zip(where, bench.scorer.many_fact_scores(wanted, updates)):
            answers[number] = scores
    return answers
