"""Run one benchmark case: the edit sequence of docs/METRICS.md, its scores and metrics.

``CaseRunner.run`` takes a ConflictEdit or RoundEdit case on the original
model M0, applies e1 (M1) and e2 (M2) through the guard (which owns the undo
and checks the editor contract), scores what the metrics need at each step,
and returns a :class:`CaseRecord` holding the raw scores, the per-case
metrics and whether the pitfall showed.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from benchmark import metrics as M
from benchmark.datasets import Case, ConflictCase, Dataset, RoundCase, prompt_set
from benchmark.splits import SPLITS
from editkit.contract import Editor
from editkit.facts import Edit, Fact, Relation, fill
from editkit.low_rank import LowRankUpdate, combined
from editkit.scoring import Scorer
from harness.chain import Chain
from harness.guard import CaseEdits, EditFailure, ModelDamaged, ModelGuard, check_updates
from harness.original_scores import OriginalScores
from harness.records import CaseRecord

CONTEXT_MARGIN_TOKENS = 64  # room left in the model's context for the prefixes editors put before a prompt


class CaseInputError(ValueError):
    """A case this model cannot score as given (a label too long for its context, an object without tokens)."""


# A case is a plan: a generator that yields the steps below, receives each step's answer (a Score's scores), and
# returns (scores, metrics, notes). One plan serves both ways of carrying it out: one case on the model itself
# (CaseRunner._carry_out), or K cases in lockstep on the original weights (CaseRunner._carry_out_together).

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
Plan = Generator[Step, Any, tuple[dict, dict, list[str]]]


@dataclass
class _Together:
    """A case carried out with others: its plan, where it stands, and its model's update so far."""

    case: Case
    seed: int
    plan: Plan
    paraphrases: dict[str, tuple[str, ...]]
    step: Step | None = None
    answer: Any = None
    update: LowRankUpdate | None = None
    applied: list[str] = field(default_factory=list)
    edit_seconds: float = 0.0
    eval_seconds: float = 0.0


def _facts_scored(case: Case) -> list[Fact]:
    """The (subject, relation, object) texts a case scores, with every object it scores for them."""
    if isinstance(case, RoundCase):
        e = case.edit
        return [Fact(e.subject, e.relation, o) for o in (*case.true_objects, e.new_object)]
    facts = list(case.triples)
    for e in case.edits:
        facts += [Fact(e.subject, e.relation, e.object), Fact(e.subject, e.relation, e.new_object),
                  Fact(e.new_object, case.edits[0].relation, case.edits[0].new_object)]
    return facts


def original_facts(case: Case) -> list[tuple[str, Relation, list[str]]]:
    """``(subject, relation, objects)`` a case scores on the unedited model: RoundEdit's M0, composite's tied fact."""
    if isinstance(case, RoundCase):
        e = case.edit
        return [(e.subject.label, e.relation, [e.object.label, *(o.label for o in case.other_objects), e.new_object.label])]
    if case.split == "composite":
        tied = case.triples[case.prerequisites[0]]
        return [(tied.subject.label, tied.relation, [tied.object.label])]
    return []


def case_seed(base_seed: int, case_id: str) -> int:
    """A seed per case, stable across runs, workers and collection order."""
    return int.from_bytes(hashlib.sha256(f"{base_seed}:{case_id}".encode()).digest()[:4], "big") & 0x7FFFFFFF


class CaseRunner:
    """Edits and scores cases on one model with one editor."""

    def __init__(self, editor: Editor, scorer: Scorer, dataset: Dataset | Callable[[], Dataset] | None = None, seed: int = 0,
                 mle: bool = False, guard: ModelGuard | None = None, retention_every: int = 10, retention_sample: int = 20,
                 original_scores: OriginalScores | None = None) -> None:
        """``dataset`` gives the paraphrases of the cases' relations (a callable is called on first need).

        Sequential mode: set ``chain`` (a :class:`harness.chain.Chain` on the same guard); cases then edit the
        chain's model without undo, and every ``retention_every`` edits a record also carries the retention of
        ``retention_sample`` earlier edits."""
        if mle and not editor.supports_batch:
            raise ValueError(f"--mle edits all true objects in one batch; editor {editor.name!r} cannot edit a batch")
        self.editor, self.scorer, self.seed, self.mle = editor, scorer, seed, mle
        self._dataset = dataset
        self._paraphrases: dict[str, tuple[str, ...]] = {}
        self.model = editor.loaded.model
        self.guard = guard or ModelGuard(self.model)
        self._edit_seconds = 0.0
        self._edit_seconds_ahead = 0.0  # Editor.prepare's time, counted in the next case
        self._eval_seconds_ahead = 0.0  # the batched unedited-model scoring's time, likewise
        self._eval_seconds = 0.0
        self._applied: list[str] = []
        self.chain: Chain | None = None
        self.retention_every, self.retention_sample = retention_every, retention_sample
        self._original_m0: dict[str, list[float]] = {}  # round case id -> its M0 scores on the original model (sequential)
        self.original_scores = original_scores  # M0 scores on disk, shared by every editor's run on this model
        self.prepared_batch: str | None = None  # --case-batch: the batch whose first edits were last worked out ahead
        self._together: dict[str, CaseRecord | Exception] = {}  # --case-batch: records of cases run together, by case id
        self._prepare_note = ""

    def _edits(self):
        """Where a case's edits go: the guard's per-case undo, or the chain (sequential mode)."""
        return self.chain.case() if self.chain is not None else self.guard.case(self.editor)

    # Timed building blocks -------------------------------------------------------

    def _apply(self, case_edits: CaseEdits | Chain, edits: Sequence[Edit], seed: int) -> None:
        before = case_edits.seconds
        try:
            case_edits.apply(edits, seed)
        finally:
            self._edit_seconds += case_edits.seconds - before
        self._applied.extend(e.describe() for e in edits)

    def _score(self, case: Case, subject: str, relation: Relation, objects: Sequence[str], original: bool = False) -> list[float]:
        """Scores of ``objects`` for the fact; ``original``: the model is the unedited one (cached on disk when possible)."""
        start = time.perf_counter()
        prompts = prompt_set(relation, subject, self._paraphrases)
        model_is_original = self.chain is None or self.chain.edits_applied == 0
        if original and self.original_scores is not None and model_is_original:
            result = self._original_scores(prompts, list(objects))
        else:
            result = self.scorer.fact_scores(prompts, list(objects))
        self._eval_seconds += time.perf_counter() - start
        return result

    def _original_scores(self, prompts: list[str], objects: list[str]) -> list[float]:
        """The unedited model's scores from disk, computed and stored when not there yet."""
        return self.original_scores.scores(prompts, objects, lambda: self.scorer.fact_scores(prompts, objects))

    # Cases -------------------------------------------------------------------------

    def check_fits(self, case: Case) -> None:
        """Every text the case scores must fit the model, with room for context templates; every object must have tokens."""
        limit = self.scorer.max_tokens() - CONTEXT_MARGIN_TOKENS
        for fact in _facts_scored(case):
            obj = fact.object.label
            for template in (fact.relation.prompt, *self._paraphrases.get(fact.relation.id, ())):
                encoded = self.scorer.encode(fill(template, fact.subject.label), obj)
                if len(encoded.ids) == encoded.prompt_len:
                    raise CaseInputError(f"case {case.case_id}: object {obj!r} has no tokens for this model's tokenizer")
                if len(encoded.ids) > limit:
                    raise CaseInputError(
                        f"case {case.case_id}: {fill(template, fact.subject.label)[:60]!r} + {obj[:40]!r} is {len(encoded.ids)} "
                        f"tokens; this model takes {limit} here ({CONTEXT_MARGIN_TOKENS} kept for context templates)")

    def _use_paraphrases(self, case: Case, paraphrases: dict[str, tuple[str, ...]] | None = None) -> None:
        """The paraphrases a case is scored with: given ones, else its dataset's, else none."""
        if paraphrases is not None:
            self._paraphrases = paraphrases
        elif case.source and self.dataset is not None:
            self._paraphrases = self.dataset.prompts_for(case)
        else:
            self._paraphrases = {}

    def prepare(self, cases: Sequence[Case]) -> None:
        """``--case-batch``: the edits ``cases`` make on the original model, worked out ahead in one batch (``Editor.prepare``).

        Those are each case's first edit, and coverage's e2 alone ("Single"). The
        time is counted in the next case's edit seconds, with a note.
        """
        edits: list[Edit] = []
        for case in cases:
            if isinstance(case, RoundCase):
                edits.append(case.edit)
            else:
                edits.append(case.edits[0])
                if case.split == "coverage" and self.chain is None:
                    edits.append(case.edits[1])
        edits = list(dict.fromkeys(edits))
        scored = self._score_originals_together(cases)
        if self._run_together(cases):
            return
        if not edits or type(self.editor).prepare is Editor.prepare:
            return
        seconds = self.guard.prepare(self.editor, edits, case_seed(self.seed, cases[0].case_id))
        self._edit_seconds_ahead = seconds
        self._prepare_note = (f"worked out the first edits of {len(cases)} cases ahead (--case-batch): {seconds:.2f} s counted here"
                              + (f"; {scored} unedited-model facts scored together" if scored else ""))

    def _run_together(self, cases: Sequence[Case]) -> bool:
        """Run ``cases`` together when the editor offers ``compute_updates`` (not on a chain); whether they were.

        A failure of the batch (the editor raised, or changed the model) is a
        note, and the cases run one at a time as without it.
        """
        self._together = {}
        if self.chain is not None or type(self.editor).compute_updates is Editor.compute_updates:
            return False
        try:
            self._together, _ = self.guard.without_changes(self.editor, "compute_updates()", f"{len(cases)} cases",
                                                           lambda: self._carry_out_together(cases), case_seed(self.seed, cases[0].case_id))
        except ModelDamaged:
            raise
        except EditFailure as exc:
            self._prepare_note = f"ran one at a time instead of together: {exc}"
            return False
        return True

    def _score_originals_together(self, cases: Sequence[Case]) -> int:
        """The unedited model's facts of ``cases`` not yet on disk, scored in one batched call and stored; how many."""
        if self.original_scores is None or self.chain is not None:
            return 0
        wanted: dict[str, tuple[list[str], list[str]]] = {}
        for case in cases:
            try:
                self._use_paraphrases(case)
                self.check_fits(case)
            except CaseInputError:
                continue  # the case reports it when it runs
            for subject, relation, objects in original_facts(case):
                prompts = prompt_set(relation, subject, self._paraphrases)
                if not self.original_scores.has(prompts, objects):
                    wanted[self.original_scores.key(prompts, objects)] = (prompts, objects)
        if not wanted:
            return 0
        start = time.perf_counter()
        for (prompts, objects), scores in zip(wanted.values(), self.scorer.many_fact_scores(list(wanted.values()))):
            self.original_scores.store(prompts, objects, scores)
        self._eval_seconds_ahead = time.perf_counter() - start
        return len(wanted)

    @property
    def dataset(self) -> Dataset | None:
        if callable(self._dataset):
            self._dataset = self._dataset()
        return self._dataset

    def run(self, case: Case, paraphrases: dict[str, tuple[str, ...]] | None = None) -> CaseRecord:
        """Run ``case``; its relations' paraphrases come from ``paraphrases``, else from the dataset it was loaded from
        (a hand-written case without either is scored on its rewrite prompt alone)."""
        outcome = self._together.pop(case.case_id, None)
        if outcome is not None and paraphrases is None:  # run together with its batch (--case-batch)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        self._use_paraphrases(case, paraphrases)
        self._edit_seconds, self._eval_seconds = self._edit_seconds_ahead, self._eval_seconds_ahead
        self._edit_seconds_ahead = self._eval_seconds_ahead = 0.0
        prepare_note, self._prepare_note = self._prepare_note, ""
        self._applied = []
        self.check_fits(case)
        if self.chain is not None:
            self.chain.start_case()
        seed = case_seed(self.seed, case.case_id)
        scores, values, notes = self._carry_out(case, self._plan(case, seed))
        if prepare_note:
            notes.append(prepare_note)
        record = self._record(case, seed, scores, values, notes, self._edit_seconds, self._eval_seconds, self._applied)
        if self.chain is not None:
            self._chain_fields(record, case)
        return record

    def _record(self, case: Case, seed: int, scores: dict, values: dict[str, float], notes: list[str], seconds_edit: float,
                seconds_eval: float, applied: list[str]) -> CaseRecord:
        """The case's record, with its pitfall decided; a NaN metric is an error, never a result."""
        for name, value in values.items():
            if value != value:  # NaN
                raise FloatingPointError(f"case {case.case_id}: metric {name} is NaN (scores {scores})")
        split = SPLITS[case.split]
        pitfall = split.shows_pitfall(values)
        message = describe_pitfall(case.split, values, scores) if pitfall else ""
        return CaseRecord(
            case_id=case.case_id, benchmark=case.benchmark, split=case.split, index=case.index, group=case.group, seed=seed,
            scores=scores, metrics=values, pitfall=pitfall, pitfall_message=message,
            seconds_edit=round(seconds_edit, 3), seconds_eval=round(seconds_eval, 3),
            edits=list(applied), notes=notes, device=str(self.editor.loaded.device),
        )

    # Sequential mode -----------------------------------------------------------------------

    def score_originals(self, cases: Sequence[Case]) -> None:
        """On the original model, before a chain's first edit: each round case's M0 scores, for its original-model reading."""
        for case in cases:
            if isinstance(case, RoundCase) and case.case_id not in self._original_m0:
                self._use_paraphrases(case)
                self._original_m0[case.case_id] = self._score(case, *original_facts(case)[0], original=True)

    def _chain_fields(self, record: CaseRecord, case: Case) -> None:
        chain = self.chain
        record.chain, record.chain_position, record.chain_segment = chain.chain_id, chain.case_start, chain.segment
        if isinstance(case, RoundCase) and case.case_id in self._original_m0:
            k = 1 + len(case.other_objects)
            m0, m2 = self._original_m0[case.case_id], record.scores["m2_true"] + [record.scores["m2_new"]]
            ir = M.ignore_rate(m0[1:k], m2[1:k])
            record.original_metrics = {"IR": ir, "FR": M.failure_rate(ir), "D": M.distortion(m0[:k], m2[:k])}
            record.scores["m0_original_true"] = m0[:k]
        before, after = chain.case_start, chain.edits_applied
        if self.retention_every and before // self.retention_every != after // self.retention_every:
            case_edits = list(case.edits) if isinstance(case, ConflictCase) else [case.edit]
            start = time.perf_counter()
            retention = chain.retention(self._still_holds, self.retention_sample, exclude=case_edits)
            self._eval_seconds += time.perf_counter() - start
            if retention.sample:
                record.retention = retention.to_dict()

    def _still_holds(self, edit: Edit) -> bool:
        new, old = self.scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label])
        return new > old

    def _conflict_plan(self, case: ConflictCase, seed: int) -> Plan:
        e1, e2 = case.edits
        s: dict[str, float] = {}
        tied = case.triples[case.prerequisites[0]] if case.split == "composite" else None
        if tied is not None:
            (s["m0_tied"],) = yield Score(*original_facts(case)[0], original=True)
        yield Apply((e1,), seed)
        (s["m1_e1_new"],) = yield Score(e1.subject.label, e1.relation, [e1.new_object.label])
        yield Apply((e2,), seed + 1)
        if case.split == "coverage":  # e1 and e2 share subject and relation
            s["m2_e2_new"], s["m2_e1_new"] = yield Score(e2.subject.label, e2.relation, [e2.new_object.label, e1.new_object.label])
        elif case.split == "reverse":
            (s["m2_e1_new"],) = yield Score(e1.subject.label, e1.relation, [e1.new_object.label])
            (s["m2_e2_new"],) = yield Score(e2.subject.label, e2.relation, [e2.new_object.label])
            (s["m2_query"],) = yield Score(e2.new_object.label, e1.relation, [e1.new_object.label])
        else:  # composite: the query shares e1's subject and relation
            s["m2_e1_new"], s["m2_query"] = yield Score(e1.subject.label, e1.relation, [e1.new_object.label, e2.new_object.label])
            (s["m2_e2_new"],) = yield Score(e2.subject.label, e2.relation, [e2.new_object.label])
            (s["m2_tied"],) = yield Score(tied.subject.label, tied.relation, [tied.object.label])
        values: dict[str, float] = {
            "CS_exp": M.conflict_score(s["m2_e2_new"], s["m2_e1_new"]),
            "CM": M.conflict_magnitude(s["m1_e1_new"], s["m2_e1_new"]),
        }
        notes = []
        if case.split == "coverage" and self.chain is not None:
            notes.append("sequential: Succ (e2 alone on the model before the case) is not measured on a chain")
        elif case.split == "coverage":  # "Single": e2 alone on the original model
            yield Restart()
            yield Apply((e2,), seed + 2)
            s["single_e2_new"], s["single_e1_new"] = yield Score(e2.subject.label, e2.relation, [e2.new_object.label, e1.new_object.label])
            values["Succ"] = M.prefers(s["single_e2_new"], s["single_e1_new"])
        else:
            values["CS_imp"] = M.conflict_score(s["m2_query"], s["m2_e1_new"])
        if tied is not None:
            values["TFD"] = M.tied_fact_damage(s["m0_tied"], s["m2_tied"])
        if e1.object.label == e1.new_object.label:
            notes.append("edit 1 has new_object == object (a published-data quirk)")
        return s, values, notes

    def _round_plan(self, case: RoundCase, seed: int) -> Plan:
        edit = case.edit
        subject, relation = edit.subject.label, edit.relation
        _, _, objects = original_facts(case)[0]  # the true objects, then the new one
        true_labels = objects[:-1]
        m0 = yield Score(subject, relation, objects, original=True)
        yield Apply((edit,), seed)
        m1_new, m1_old = yield Score(subject, relation, [edit.new_object.label, edit.object.label])
        back_objects = case.true_objects if self.mle else (edit.object,)
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

    def _plan(self, case: Case, seed: int) -> Plan:
        return self._conflict_plan(case, seed) if isinstance(case, ConflictCase) else self._round_plan(case, seed)

    # Carrying plans out -----------------------------------------------------------------

    def _carry_out(self, case: Case, plan: Plan) -> tuple[dict, dict, list[str]]:
        """One case on the model itself: its edits written through the guard (or the chain), undone on a restart and at the end."""
        with contextlib.ExitStack() as open_edits:
            journal = None
            step = next(plan)
            while True:
                answer = None
                if isinstance(step, Apply):
                    if journal is None:
                        journal = open_edits.enter_context(self._edits())
                    self._apply(journal, list(step.edits), step.seed)
                elif isinstance(step, Restart):
                    open_edits.close()
                    journal = None
                else:
                    answer = self._score(case, step.subject, step.relation, step.objects, step.original)
                try:
                    step = plan.send(answer)
                except StopIteration as done:
                    return done.value

    def _carry_out_together(self, cases: Sequence[Case]) -> dict[str, CaseRecord | Exception]:
        """``--case-batch`` with an editor that offers ``compute_updates``: all ``cases`` in lockstep, on the original weights.

        Each case's edited model is its own sum of low-rank updates, seen by its
        rows only (:class:`editkit.low_rank.RowUpdates`). At every step the
        cases that edit are computed in one ``compute_updates`` call, and the
        cases that score in one batched scoring call. Returns each case's record,
        or the exception it raised.
        """
        outcomes: dict[str, CaseRecord | Exception] = {}
        running: list[_Together] = []
        for case in cases:
            try:
                self._use_paraphrases(case)
                self.check_fits(case)
            except CaseInputError as exc:
                outcomes[case.case_id] = exc
                continue
            seed = case_seed(self.seed, case.case_id)
            together = _Together(case, seed, self._plan(case, seed), self._paraphrases)
            together.step = next(together.plan)
            running.append(together)
        while running:
            applying = [t for t in running if isinstance(t.step, Apply)]
            if applying:
                start = time.perf_counter()
                updates = self.editor.compute_updates([list(t.step.edits) for t in applying], [t.update for t in applying])
                check_updates(self.editor, updates, len(applying))
                share = (time.perf_counter() - start) / len(applying)
                for t, update in zip(applying, updates):
                    t.update = combined(t.update, update)
                    t.applied += [e.describe() for e in t.step.edits]
                    t.edit_seconds += share
            scoring = [t for t in running if isinstance(t.step, Score)]
            if scoring:
                start = time.perf_counter()
                answers = self._score_together(scoring)
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
                    outcomes[t.case.case_id] = self._record(t.case, t.seed, scores, values, notes, t.edit_seconds,
                                                            t.eval_seconds, t.applied)
                except FloatingPointError as exc:  # a NaN metric: this case's error, as when it runs alone
                    outcomes[t.case.case_id] = exc
            running = still
        return outcomes

    def _score_together(self, scoring: list[_Together]) -> list[list[float]]:
        """The facts the ``scoring`` cases ask for, each on its case's model, in one batched call (originals from disk)."""
        answers: list[list[float] | None] = [None] * len(scoring)
        wanted, updates, where = [], [], []
        for number, t in enumerate(scoring):
            step = t.step
            prompts = prompt_set(step.relation, step.subject, t.paraphrases)
            if step.original and t.update is None and self.original_scores is not None:
                answers[number] = self._original_scores(prompts, list(step.objects))
                continue
            wanted.append((prompts, list(step.objects)))
            updates.append(t.update)
            where.append(number)
        if wanted:
            for number, scores in zip(where, self.scorer.many_fact_scores(wanted, updates)):
                answers[number] = scores
        return answers


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
