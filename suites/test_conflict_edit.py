"""ConflictEdit: two edits that clash logically (coverage, reverse, composite).

One item per case of the dataset (``--dataset-dir``); it fails when the
knowledge-conflict pitfall shows: coverage when CS_exp = 0, reverse and
composite when CS_imp = 0.
"""


def test_conflict_edit(conflict_case, run_case):
    run_case(conflict_case)
