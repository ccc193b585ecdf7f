"""The metric formulas of docs/METRICS.md: hand-computed numbers and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pitfalls_benchmark import metrics as M

probability = st.floats(min_value=1e-12, max_value=1.0, allow_nan=False)


def test_conflict_scores_are_strict_comparisons():
    assert M.conflict_score(0.3, 0.2) == 1
    assert M.conflict_score(0.2, 0.3) == 0
    assert M.conflict_score(0.2, 0.2) == 0  # a tie is not a win


def test_conflict_magnitude_by_hand():
    assert M.conflict_magnitude(0.8, 0.2) == pytest.approx(0.75)  # (0.8-0.2)/0.8
    assert M.conflict_magnitude(0.1, 0.15) == pytest.approx(-0.5)
    assert M.conflict_magnitude(0.1, 0.9) == -1.0  # (0.1-0.9)/0.1 = -8, clipped at -1


def test_tied_fact_damage_by_hand():
    assert M.tied_fact_damage(0.5, 0.1) == pytest.approx(0.8)
    assert M.tied_fact_damage(0.5, 1.0) == pytest.approx(-1.0)  # TFD is not clipped


def test_round_success_by_hand():
    assert M.round_success(new_m1=0.6, old_m1=0.1, old_m2=0.5, new_m2=0.2) == 1.0
    assert M.round_success(new_m1=0.6, old_m1=0.1, old_m2=0.1, new_m2=0.2) == 0.5
    assert M.round_success(new_m1=0.1, old_m1=0.6, old_m2=0.1, new_m2=0.2) == 0.0


def test_ignore_and_failure_rate_by_hand():
    assert M.ignore_rate([0.3, 0.2, 0.1], [0.1, 0.25, 0.05]) == pytest.approx(2 / 3)
    assert M.failure_rate(2 / 3) == 1
    assert M.failure_rate(0.5) == 0  # FR needs more than half


def test_distortion_by_hand_with_division_by_k():
    m0 = [0.2, 0.2]  # q = [0.5, 0.5]
    m2 = [0.3, 0.1]  # p = [0.75, 0.25]
    p, q = [0.75, 0.25], [0.5, 0.5]  # M2 and M0 scores, normalised
    m = [0.625, 0.375]
    kl_pm = sum(pi * math.log(pi / mi) for pi, mi in zip(p, m))
    kl_qm = sum(qi * math.log(qi / mi) for qi, mi in zip(q, m))
    js = (kl_pm + kl_qm) / 2
    assert js == pytest.approx(0.03382, abs=1e-5)  # by hand: (0.13674 - 0.10137 + 0.14384 - 0.11157) / 2
    assert M.js_divergence(m0, m2) == pytest.approx(js)
    assert M.distortion(m0, m2) == pytest.approx(js / 2)  # k = 2 true objects


def test_distortion_of_three_objects_divides_by_three():
    m0, m2 = [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]
    assert M.distortion(m0, m2) == pytest.approx(M.js_divergence(m0, m2) / 3)


@given(st.lists(probability, min_size=2, max_size=10), st.lists(probability, min_size=2, max_size=10))
def test_js_is_symmetric_bounded_and_scale_free(a, b):
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    js = M.js_divergence(a, b)
    assert 0 <= js <= math.log(2) + 1e-12
    assert js == pytest.approx(M.js_divergence(b, a), abs=1e-12)
    assert M.js_divergence(a, [3 * x for x in a]) == pytest.approx(0, abs=1e-12)  # only the shape matters
    assert M.distortion(a, b) == pytest.approx(js / n)


@given(probability, probability)
def test_conflict_magnitude_never_below_minus_one(m1, m2):
    cm = M.conflict_magnitude(m1, m2)
    assert -1 <= cm <= 1
    assert (cm > 0) == (m2 < m1)


@given(st.lists(st.tuples(probability, probability), min_size=1, max_size=12))
def test_ignore_rate_counts_lowered_objects(pairs):
    before, after = [p[0] for p in pairs], [p[1] for p in pairs]
    ir = M.ignore_rate(before, after)
    assert ir * len(pairs) == pytest.approx(sum(b > a for b, a in pairs))
    assert M.failure_rate(ir) == (ir > 0.5)


@given(st.lists(st.sampled_from([0, 1]), min_size=1, max_size=200))
def test_binary_aggregate_interval_contains_the_mean(values):
    agg = M.aggregate("CS_exp", values)
    assert agg["n"] == len(values)
    assert agg["low"] - 1e-9 <= agg["value"] <= agg["high"] + 1e-9
    assert 0 <= agg["low"] and agg["high"] <= 100


def test_aggregate_is_in_percent_and_skips_nan():
    agg = M.aggregate("D", [0.01, 0.03, float("nan")])
    assert agg["n"] == 2
    assert agg["value"] == pytest.approx(2.0)


@st.composite
def metric_values(draw):
    """A metric's name and per-case values anywhere in its range (TFD has no lower bound: down to -5)."""
    name = draw(st.sampled_from(sorted(M.METRIC_RANGES)))
    low, high = M.METRIC_RANGES[name]
    return name, draw(st.lists(st.floats(max(low, -5.0), high), min_size=1, max_size=30))


@given(metric_values(), st.randoms(use_true_random=False))
def test_an_aggregate_stays_in_its_metrics_range_and_does_not_depend_on_the_order_of_the_records(named, rng):
    name, values = named
    low_bound, high_bound = M.METRIC_RANGES[name]
    shuffled = list(values)
    rng.shuffle(shuffled)
    first, second = M.aggregate(name, values), M.aggregate(name, shuffled)
    assert first == second  # bit for bit: a merge of shards and the unsplit run agree
    assert 100 * low_bound <= first["low"] <= first["value"] <= first["high"] <= 100 * high_bound


def test_small_samples_get_intervals_that_mean_what_they_say():
    three = M.aggregate("Succ", [1.0, 1.0, 0.5])  # RoundEdit's Succ: 83% over 3 cases
    assert three["high"] <= 100 and round(three["value"], 2) == 83.33 and three["low"] > 30
    ten_equal = M.aggregate("Succ", [0.5] * 10)
    assert ten_equal["low"] < 50 < ten_equal["high"]  # ten equal values still get a width
    cm = M.aggregate("CM", [0.9, 0.95, 1.0])
    assert cm["high"] == 100.0  # CM is at most 1
    assert M.aggregate("CM", [-1.0, -1.0, -0.9])["low"] == -100.0  # and clipped at -1
    # The two hard RoundEdit cases of the README's first run (Gemma 3 270M, ROME) read JS 24.59 [0.0, 237.9]
    two = M.aggregate("JS", [0.07806234567069464, 0.41375340361030427])
    assert round(two["value"], 2) == 24.59 and two["high"] == pytest.approx(100 * math.log(2))


def test_the_distortion_ranges_are_what_the_formulas_can_reach():
    """JS of two distributions is at most ln 2 (reached by disjoint ones); D divides it by k >= 2."""
    far = M.js_divergence([1.0, 1e-300], [1e-300, 1.0])
    assert far == pytest.approx(math.log(2)) and far <= M.METRIC_RANGES["JS"][1]
    assert M.distortion([1.0, 1e-300], [1e-300, 1.0]) == pytest.approx(M.METRIC_RANGES["D"][1])
    assert M.conflict_magnitude(0.1, 0.9) == M.METRIC_RANGES["CM"][0]


def test_the_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 9, 29, 30, 31, 50, 200):
        assert abs(M.t_quantile_975(df) - stats.t.ppf(0.975, df)) < 1e-3
