"""What each split's case does, step by step: the edit sequence of docs/METRICS.md as a plan.

A plan is a generator. It yields steps (:class:`Score` some objects, :class:`Apply`
some edits, :class:`Restart` from the unedited model), receives each
:class:`Score`'s answer (the objects' scores), and returns
``(scores, metrics, notes)``. It knows nothing of models or editors: the
harness's executors carry it out, one case on the model
(``harness.executors.single``), many cases in lockstep on per-row updates
(``harness.executors.lockstep``) or on a chain of accumulating edits
(``harness.executors.chained``).

``PLANS`` has one :class:`SplitPlan` per split of ``pitfalls_benchmark.splits.SPLITS``.
A new split is added here and there alone: its case type in
``pitfalls_benchmark.datasets``, its row in ``SPLITS`` (metrics, pitfall rule and
message), its plan in ``PLANS``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Union

from pitfalls_benchmark import metrics as M
from pitfalls_benchmark.datasets import Case, ConflictCase, RoundCase
from pitfalls_benchmark.splits import SPLITS
from pitfalls_editkit.facts import Edit, Fact, Relation


@dataclass(frozen=True)
class Score:
    """Score ``objects`` for (subject, relation) on the case's model as it is now; ``original``: it is the unedited one."""

    subject: str
    relation: Relation
    objects: Sequence[str]
    original: bool = False


@dataclass(frozen=True)
class Apply:
    """Edit the case's model with ``edits`` (one ``Editor.apply`` call), torch seeded with ``seed``."""

    edits: tuple[Edit, ...]
    seed: int


@dataclass(frozen=True)
class Restart:
    """Undo the case's edits: the steps after it start again from the unedited model."""


Step = Union[Score, Apply, Restart]
Outcome = tuple[dict[str, Any], dict[str, float], list[str]]  # (scores, metrics, notes)
Plan = Generator[Step, Any, Outcome]


@dataclass(frozen=True)
class PlanSettings:
    """What changes a plan besides its case: ``--mle``, and whether the case is one link of a chain (``--sequential``)."""

    mle: bool = False
    on_chain: bool = False


OriginalFact = tuple[str, Relation, list[str]]  # (subject, relation, objects) scored on the unedited model


@dataclass(frozen=True)
class SplitPlan:
    """How a split's cases run.

    ``steps``: the plan of one case. ``original_facts``: the facts it scores on
    the unedited model (scored ahead, together, and kept on disk). ``first_edits``:
    the edits it makes on the unedited model (worked out ahead with
    ``--case-batch``). ``facts_scored``: every fact it scores (checked to fit the
    model before the case runs). ``own_edits``: every edit of the case.
    ``against_original``: on a chain, its metrics against the truly unedited
    model, from the scores of its first original fact read before the chain's
    first edit (None: the split has no such reading).
    """

    steps: Callable[[Case, int, PlanSettings], Plan]
    original_facts: Callable[[Case], list[OriginalFact]]
    first_edits: Callable[[Case, PlanSettings], list[Edit]]
    facts_scored: Callable[[Case], list[Fact]]
    own_edits: Callable[[Case], list[Edit]]
    against_original: Callable[[list[float], dict[str, Any]], dict[str, float]] | None = None  # on a chain, see below


# ConflictEdit ---------------------------------------------------------------------------------------------------------


def _conflict_facts(case: ConflictCase) -> list[Fact]:
    facts = list(case.triples)
    for e in case.edits:
        facts += [Fact(e.subject, e.relation, e.object), Fact(e.subject, e.relation, e.new_object),
                  Fact(e.new_object, case.edits[0].relation, case.edits[0].new_object)]
    return facts


def _tied_fact(case: ConflictCase) -> Fact:
    """Composite: the fact the two edits' rule ties to the edited one (its damage is TFD)."""
    return case.triples[case.prerequisites[0]]


def _composite_originals(case: ConflictCase) -> list[OriginalFact]:
    tied = _tied_fact(case)
    return [(tied.subject.label, tied.relation, [tied.object.label])]


def _published_quirk(e1: Edit) -> list[str]:
    return ["edit 1 has new_object == object (a published-data quirk)"] if e1.object.label == e1.new_object.label else []


def _coverage(case: ConflictCase, seed: int, settings: PlanSettings) -> Plan:
    """e1 then e2 on the same subject and relation; Succ from e2 alone on the unedited model ("Single")."""
    e1, e2 = case.edits
    s: dict[str, float] = {}
    yield Apply((e1,), seed)
    (s["m1_e1_new"],) = yield Score(e1.subject.label, e1.relation, [e1.new_object.label])
    yield Apply((e2,), seed + 1)
    s["m2_e2_new"], s["m2_e1_new"] = yield Score(e2.subject.label, e2.relation, [e2.new_object.label, e1.new_object.label])
    values = {"CS_exp": M.conflict_score(s["m2_e2_new"], s["m2_e1_new"]), "CM": M.conflict_magnitude(s["m1_e1_new"], s["m2_e1_new"])}
    notes = []
    if settings.on_chain:
        notes.append("sequential: Succ (e2 alone on the model before the case) is not measured on a chain")
    else:
        yield Restart()
        yield Apply((e2,), seed + 2)
        s["single_e2_new"], s["single_e1_new"] = yield Score(e2.subject.label, e2.relation, [e2.new_object.label, e1.new_object.label])
        values["Succ"] = M.prefers(s["single_e2_new"], s["single_e1_new"])
    return s, values, notes + _published_quirk(e1)


def _reverse(case: ConflictCase, seed: int, settings: PlanSettings) -> Plan:
    """e1 (s, r, o) then e2 on the reverse fact; CS_imp asks the implied (o', r, s') back."""
    e1, e2 = case.edits
    s: dict[str, float] = {}
    yield Apply((e1,), seed)
    (s["m1_e1_new"],) = yield Score(e1.subject.label, e1.relation, [e1.new_object.label])
    yield Apply((e2,), seed + 1)
    (s["m2_e1_new"],) = yield Score(e1.subject.label, e1.relation, [e1.new_object.label])
    (s["m2_e2_new"],) = yield Score(e2.subject.label, e2.relation, [e2.new_object.label])
    (s["m2_query"],) = yield Score(e2.new_object.label, e1.relation, [e1.new_object.label])
    values = {"CS_exp": M.conflict_score(s["m2_e2_new"], s["m2_e1_new"]), "CM": M.conflict_magnitude(s["m1_e1_new"], s["m2_e1_new"]),
              "CS_imp": M.conflict_score(s["m2_query"], s["m2_e1_new"])}
    return s, values, _published_quirk(e1)


def _composite(case: ConflictCase, seed: int, settings: PlanSettings) -> Plan:
    """e1 then e2, whose rule implies a new object for e1's subject; TFD reads the tied fact before and after."""
    e1, e2 = case.edits
    tied = _tied_fact(case)
    s: dict[str, float] = {}
    (s["m0_tied"],) = yield Score(*_composite_originals(case)[0], original=True)
    yield Apply((e1,), seed)
    (s["m1_e1_new"],) = yield Score(e1.subject.label, e1.relation, [e1.new_object.label])
    yield Apply((e2,), seed + 1)
    s["m2_e1_new"], s["m2_query"] = yield Score(e1.subject.label, e1.relation, [e1.new_object.label, e2.new_object.label])
    (s["m2_e2_new"],) = yield Score(e2.subject.label, e2.relation, [e2.new_object.label])
    (s["m2_tied"],) = yield Score(tied.subject.label, tied.relation, [tied.object.label])
    values = {"CS_exp": M.conflict_score(s["m2_e2_new"], s["m2_e1_new"]), "CM": M.conflict_magnitude(s["m1_e1_new"], s["m2_e1_new"]),
              "CS_imp": M.conflict_score(s["m2_query"], s["m2_e1_new"]), "TFD": M.tied_fact_damage(s["m0_tied"], s["m2_tied"])}
    return s, values, _published_quirk(e1)


def _conflict_plan(steps: Callable[[ConflictCase, int, PlanSettings], Plan],
                   original_facts: Callable[[ConflictCase], list[OriginalFact]] = lambda case: [],
                   alone_too: bool = False) -> SplitPlan:
    """``alone_too``: the case also makes e2 alone on the unedited model (coverage's Single)."""

    def first_edits(case: ConflictCase, settings: PlanSettings) -> list[Edit]:
        return [case.edits[0], case.edits[1]] if alone_too and not settings.on_chain else [case.edits[0]]

    return SplitPlan(steps, original_facts, first_edits, _conflict_facts, lambda case: list(case.edits))


# RoundEdit ------------------------------------------------------------------------------------------------------------


def _round_originals(case: RoundCase) -> list[OriginalFact]:
    e = case.edit
    return [(e.subject.label, e.relation, [e.object.label, *(o.label for o in case.other_objects), e.new_object.label])]


def _round_facts(case: RoundCase) -> list[Fact]:
    e = case.edit
    return [Fact(e.subject, e.relation, o) for o in (*case.true_objects, e.new_object)]


def _round(case: RoundCase, seed: int, settings: PlanSettings) -> Plan:
    """A -> B -> A on a fact with several true objects; with ``mle`` the way back edits every true object at once."""
    edit = case.edit
    subject, relation = edit.subject.label, edit.relation
    _, _, objects = _round_originals(case)[0]  # the true objects, then the new one
    true_labels = objects[:-1]
    m0 = yield Score(subject, relation, objects, original=True)
    yield Apply((edit,), seed)
    m1_new, m1_old = yield Score(subject, relation, [edit.new_object.label, edit.object.label])
    back_objects = case.true_objects if settings.mle else (edit.object,)
    yield Apply(tuple(Edit(edit.subject, relation, edit.new_object, target) for target in back_objects), seed + 1)
    m2 = yield Score(subject, relation, objects)
    k = len(true_labels)
    ir = M.ignore_rate(m0[1:k], m2[1:k])
    values = {
        "Succ": M.round_success(m1_new, m1_old, m2[0], m2[k]),
        "IR": ir,
        "FR": M.failure_rate(ir),
        "D": M.distortion(m0[:k], m2[:k]),
        "JS": M.js_divergence(m0[:k], m2[:k]),
    }
    scores = {"true_objects": true_labels, "new_object": edit.new_object.label,
              "m0_true": m0[:k], "m0_new": m0[k], "m1_new": m1_new, "m1_old": m1_old, "m2_true": m2[:k], "m2_new": m2[k]}
    notes = []
    if case.duplicate_labels:
        notes.append(f"true objects with a repeated label scored once: {', '.join(case.duplicate_labels)}")
    return scores, values, notes


def against_original(m0: list[float], scores: dict[str, Any]) -> dict[str, float]:
    """A round case on a chain: IR, FR and D of its M2 against the truly unedited model's M0 (``original_metrics``)."""
    k = len(scores["true_objects"])
    m2 = scores["m2_true"]
    ir = M.ignore_rate(m0[1:k], m2[1:k])
    return {"IR": ir, "FR": M.failure_rate(ir), "D": M.distortion(m0[:k], m2[:k])}


_ROUND = SplitPlan(_round, _round_originals, lambda case, settings: [case.edit], _round_facts, lambda case: [case.edit],
                   against_original)

PLANS: dict[str, SplitPlan] = {
    "coverage": _conflict_plan(_coverage, alone_too=True),
    "reverse": _conflict_plan(_reverse),
    "composite": _conflict_plan(_composite, _composite_originals),
    "easy": _ROUND,
    "hard": _ROUND,
}


def plan_of(case: Case) -> SplitPlan:
    return PLANS[case.split]


def first_edits_of(cases: Sequence[Case], settings: PlanSettings) -> list[Edit]:
    """The distinct edits ``cases`` make on the unedited model, in order (what ``Editor.prepare`` gets)."""
    return list(dict.fromkeys(e for case in cases for e in plan_of(case).first_edits(case, settings)))


def describe_pitfall(split_name: str, values: dict[str, float], scores: dict[str, Any]) -> str:
    """The failure message: the deciding metric and the scores behind it (wording from the splits table)."""
    split = SPLITS[split_name]
    context: dict[str, Any] = {**scores, **values}
    if "true_objects" in scores:
        context["lowered"] = "; ".join(
            f"{label}: {a:.3g}->{b:.3g}"
            for label, a, b in zip(scores["true_objects"][1:], scores["m0_true"][1:], scores["m2_true"][1:]) if b < a)
    why = split.pitfall_message.format(**context)
    return f"{split.name} pitfall: {split.pitfall_metric}={values[split.pitfall_metric]:g}: {why}"
