"""One case on the model itself: its plan's edits written through the guard, undone on a restart and at the end."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.executors.workbench import GeneratedTwin, Paraphrases, WorkAhead, Workbench
from harness.records import CaseRecord
from pitfalls_benchmark.datasets import Case
from pitfalls_benchmark.plans import Apply, Outcome, Plan, Restart, plan_of

SAID_FLOOR = 1e-9  # added to every share a twin plan is told: its D and JS (not kept) need no zero to divide by


@dataclass
class Carried:
    """What carrying a plan out produced: its outcome, the seconds it took, the edits it applied."""

    outcome: Outcome
    edit_seconds: float = 0.0
    eval_seconds: float = 0.0
    applied: list[str] = field(default_factory=list)
    generated: GeneratedTwin | None = None  # --generation: the same plan's metrics from greedy answers
    general_ability: dict[str, float] = field(default_factory=dict)  # --general-ability, with the case's edits in force


def carry_out(bench: Workbench, plan: Plan, paraphrases: Paraphrases, open_edits: Callable[[], Any],
              originals_on_disk: Callable[[], bool], twin: Plan | None = None, measure_ability: bool = False) -> Carried:
    """Carry ``plan`` out on the model. ``open_edits()`` gives the context its edits go through (the guard's undo, or
    a chain's); ``originals_on_disk()`` says whether the model is the unedited one now (its scores may come from disk).

    ``twin`` (--generation): the same plan again, advanced in step with ``plan`` (plans never branch on what they
    are told), told at each scoring step the share of prompts whose greedy answer says each object; its metrics
    are the generated twins of ``plan``'s. ``measure_ability`` (--general-ability): the measures are taken on the
    case's edited model, before its first restart (both edits in force) or at its end."""
    carried = Carried(outcome=({}, {}, []))
    heard: list[str] = []
    if twin is not None:
        next(twin)
    with contextlib.ExitStack() as opened:
        edits = None
        step = next(plan)
        while True:
            said = None
            answer = None
            if isinstance(step, Apply):
                if edits is None:
                    edits = opened.enter_context(open_edits())
                before = edits.seconds
                try:
                    edits.apply(list(step.edits), step.seed)
                finally:
                    carried.edit_seconds += edits.seconds - before
                carried.applied += [e.describe() for e in step.edits]
            elif isinstance(step, Restart):
                if measure_ability and not carried.general_ability and edits is not None:
                    carried.general_ability = bench.general_ability()
                opened.close()
                edits = None
            else:
                start = time.perf_counter()
                unedited = step.original and originals_on_disk()
                answer = bench.score(paraphrases, step.subject, step.relation, step.objects, unedited)
                if twin is not None:
                    said = [rate + SAID_FLOOR
                            for rate in bench.said(paraphrases, step.subject, step.relation, step.objects, heard, unedited)]
                carried.eval_seconds += time.perf_counter() - start
            if twin is not None:
                try:
                    twin.send(said)
                except StopIteration as done:
                    carried.generated = GeneratedTwin(done.value[1], heard)
            try:
                step = plan.send(answer)
            except StopIteration as done:
                carried.outcome = done.value
                if measure_ability and not carried.general_ability:
                    carried.general_ability = bench.general_ability()
                return carried


def run_one(bench: Workbench, case: Case, paraphrases: Paraphrases | None = None, ahead: WorkAhead | None = None) -> CaseRecord:
    """Run ``case`` on the unedited model; its relations' paraphrases are ``paraphrases``, else its dataset's.

    ``ahead``: work done for it before (``--case-batch``), counted in its record.
    """
    ahead = ahead or WorkAhead()
    paraphrases = bench.paraphrases(case, paraphrases)
    bench.check_fits(case, paraphrases)
    seed = bench.seed_of(case)
    plan = plan_of(case).steps(case, seed, bench.settings())
    twin = plan_of(case).steps(case, seed, bench.settings()) if bench.generation else None
    carried = carry_out(bench, plan, paraphrases, lambda: bench.guard.case(bench.editor), lambda: True, twin,
                        measure_ability=bench.general is not None)
    scores, values, notes = carried.outcome
    if ahead.note:
        notes.append(ahead.note)
    record = bench.record(case, seed, scores, values, notes, carried.edit_seconds + ahead.edit_seconds,
                          carried.eval_seconds + ahead.eval_seconds, carried.applied, carried.generated)
    record.general_ability = carried.general_ability
    return record
