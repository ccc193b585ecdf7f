"""``--sequential``: cases as links of one chain of accumulating edits (:class:`harness.chain.Chain`).

:func:`start_chain` scores, on the unedited model and before the chain's
first edit, what each round case reads against the truly original model;
:func:`run_on_chain` runs one case on the chain's model as the earlier cases
left it, and adds the chain's fields to its record: where it stands, its
round-trip metrics against the original model, and every ``retention_every``
edits the retention of a sample of earlier edits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.chain import Chain
from harness.executors.single import carry_out
from harness.executors.workbench import Paraphrases, Workbench
from harness.records import CaseRecord
from pitfalls_benchmark.datasets import Case
from pitfalls_benchmark.plans import plan_of
from pitfalls_editkit.facts import Edit


@dataclass
class ChainRun:
    """A chain and what its cases read on the unedited model before its first edit (round case id -> M0 scores)."""

    chain: Chain
    original_m0: dict[str, list[float]] = field(default_factory=dict)
    retention_every: int = 10
    retention_sample: int = 20


def start_chain(bench: Workbench, chain_id: str, cases: Sequence[Case], restart_every: int | None = None,
                retention_every: int = 10, retention_sample: int = 20) -> ChainRun:
    """A new chain on the guard's (unedited) model; each round case's M0 scored now, for its original-model reading."""
    run = ChainRun(Chain(bench.guard, bench.editor, chain_id, restart_every=restart_every), {}, retention_every, retention_sample)
    for case in cases:
        plan = plan_of(case)
        if plan.against_original is not None and case.case_id not in run.original_m0:
            run.original_m0[case.case_id] = bench.score(bench.paraphrases(case), *plan.original_facts(case)[0], from_disk=True)
    return run


def run_on_chain(bench: Workbench, run: ChainRun, case: Case, paraphrases: Paraphrases | None = None) -> CaseRecord:
    """Run ``case`` on the chain's model; its edits stay (a failed edit is rolled back by the chain)."""
    chain = run.chain
    paraphrases = bench.paraphrases(case, paraphrases)
    bench.check_fits(case, paraphrases)
    chain.start_case()
    seed = bench.seed_of(case)
    plan = plan_of(case).steps(case, seed, bench.settings(on_chain=True))
    twin = plan_of(case).steps(case, seed, bench.settings(on_chain=True)) if bench.generation else None
    carried = carry_out(bench, plan, paraphrases, chain.case, lambda: chain.edits_applied == 0, twin)
    scores, values, notes = carried.outcome
    record = bench.record(case, seed, scores, values, notes, carried.edit_seconds, carried.eval_seconds, carried.applied,
                          carried.generated)
    record.chain, record.chain_position, record.chain_segment = chain.chain_id, chain.case_start, chain.segment
    reading = plan_of(case).against_original
    if reading is not None and case.case_id in run.original_m0:
        m0 = run.original_m0[case.case_id]
        record.original_metrics = reading(m0, record.scores)
        record.scores["m0_original_true"] = m0[:len(record.scores["true_objects"])]
    before, after = chain.case_start, chain.edits_applied
    if bench.general is not None and before // bench.general_every != after // bench.general_every:
        record.general_ability = bench.general_ability()  # with the chain's edits in force
    if run.retention_every and before // run.retention_every != after // run.retention_every:
        retention = chain.retention(lambda edit: _still_holds(bench, edit), run.retention_sample, exclude=plan_of(case).own_edits(case))
        if retention.sample:
            record.retention = retention.to_dict()
    return record


def _still_holds(bench: Workbench, edit: Edit) -> bool:
    new, old = bench.scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label])
    return new > old


def end_chain(run: ChainRun | None) -> str | None:
    """Put the unedited model back after a chain; a message when it could not be proven original."""
    return run.chain.restore() if run is not None else None
