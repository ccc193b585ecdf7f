"""RoundEdit: A -> B -> A on a fact with several true objects (easy, hard).

One item per case of the dataset (``--dataset-dir``); it fails when the
knowledge-distortion pitfall shows: FR = 1 (the round trip lowered more than
half of the other true objects).
"""


def test_round_edit(round_case, run_case):
    run_case(round_case)
