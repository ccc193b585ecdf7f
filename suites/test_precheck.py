"""The conflict pre-check on the dataset's own cases (``pytest suites/ -m precheck``; not run otherwise).

Every ConflictEdit case's two edits must be flagged as the conflict its split
names; no RoundEdit case's Multi-Label Edit step (several true objects of a
1-to-N fact at once) may be. No model is loaded.
"""


def test_precheck(precheck_case, precheck_rules):
    from pitfalls_benchmark.splits import SPLITS
    from pitfalls_generator.precheck import case_batch, find_conflicts

    _, edits, facts = case_batch(precheck_case)
    conflicts = [f for f in find_conflicts(edits, precheck_rules, facts) if f.conflict]
    if SPLITS[precheck_case.split].benchmark == "conflict":
        assert any(f.kind == precheck_case.split for f in conflicts), f"{precheck_case.case_id}: not flagged as {precheck_case.split}"
    else:
        assert not conflicts, f"{precheck_case.case_id}: flagged: {conflicts[0].why}"
