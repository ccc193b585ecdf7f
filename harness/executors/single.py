"""One case on the model itself: its plan's edits written through the guard, undone on a restart and at the end."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.executors.workbench import Paraphrases, WorkAhead, Workbench
from harness.records import CaseRecord
from pitfalls_benchmark.datasets import Case
from pitfalls_benchmark.plans import Apply, Outcome, Plan, Restart, plan_of


@dataclass
class Carried:
    """What carrying a plan out produced: its outcome, the seconds it took, the edits it applied."""

    outcome: Outcome
    edit_seconds: float = 0.0
    eval_seconds: float = 0.0
    applied: list[str] = field(default_factory=list)


def carry_out(bench: Workbench, plan: Plan, paraphrases: Paraphrases, open_edits: Callable[[], Any],
              originals_on_disk: Callable[[], bool]) -> Carried:
    """Carry ``plan`` out on the model. ``open_edits()`` gives the context its edits go through (the guard's undo, or
    a chain's); ``originals_on_disk()`` says whether the model is the unedited one now (its scores may come from disk)."""
    carried = Carried(outcome=({}, {}, []))
    with contextlib.ExitStack() as opened:
        edits = None
        step = next(plan)
        while True:
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
                opened.close()
                edits = None
            else:
                start = time.perf_counter()
                answer = bench.score(paraphrases, step.subject, step.relation, step.objects, step.original and originals_on_disk())
                carried.eval_seconds += time.perf_counter() - start
            try:
                step = plan.send(answer)
            except StopIteration as done:
                carried.outcome = done.value
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
    carried = carry_out(bench, plan, paraphrases, lambda: bench.guard.case(bench.editor), lambda: True)
    scores, values, notes = carried.outcome
    if ahead.note:
        notes.append(ahead.note)
    return bench.record(case, seed, scores, values, notes, carried.edit_seconds + ahead.edit_seconds,
                        carried.eval_seconds + ahead.eval_seconds, carried.applied)
