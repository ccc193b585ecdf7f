"""Per-case pitfall metrics and their dataset-level aggregates.

Pure functions of scores (``score(M, s, r, o)`` of docs/METRICS.md), kept in
one module so the formulas can be read, property-tested and checked against
hand-computed numbers. The quirks of the reference evaluation are kept on
purpose: CM is clipped at -1 and D divides the JS divergence by k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Which direction is better, for reports and arrows.
HIGHER_IS_BETTER = {"Succ": True, "CS_exp": True, "CS_imp": True, "CM": True, "TFD": False, "D": False, "JS": False, "IR": False, "FR": False}
# Means of 0/1 values get a Wilson interval (round Succ can be 0.5: then a normal one).
BINARY_METRICS = frozenset({"Succ", "CS_exp", "CS_imp", "FR"})


def prefers(score_a: float, score_b: float) -> int:
    """1 if ``a`` strictly beats ``b``, else 0 (ties lose, as in the reference)."""
    return int(score_a > score_b)


def conflict_score(later_edit_score: float, earlier_edit_score: float) -> int:
    """CS_exp / CS_imp: 1 if the model after both edits prefers the later fact."""
    return prefers(later_edit_score, earlier_edit_score)


def conflict_magnitude(e1_score_m1: float, e1_score_m2: float) -> float:
    """CM = max((score(M1,e1) - score(M2,e1)) / score(M1,e1), -1)."""
    return max((e1_score_m1 - e1_score_m2) / e1_score_m1, -1.0)


def tied_fact_damage(tied_score_m0: float, tied_score_m2: float) -> float:
    """TFD = (score(M0,t0) - score(M2,t0)) / score(M0,t0)."""
    return (tied_score_m0 - tied_score_m2) / tied_score_m0


def round_success(new_m1: float, old_m1: float, old_m2: float, new_m2: float) -> float:
    """Succ = 0.5*[o* beats o after e1] + 0.5*[o beats o* after e2]."""
    return 0.5 * prefers(new_m1, old_m1) + 0.5 * prefers(old_m2, new_m2)


def ignore_rate(others_m0: Sequence[float], others_m2: Sequence[float]) -> float:
    """IR: fraction of the other true objects whose score the round trip lowered."""
    if len(others_m0) != len(others_m2) or not others_m0:
        raise ValueError("ignore_rate needs equally long, non-empty score lists")
    lowered = sum(before > after for before, after in zip(others_m0, others_m2))
    return lowered / len(others_m0)


def failure_rate(ir: float) -> int:
    """FR: 1 if more than half of the other true objects were lowered."""
    return int(ir > 0.5)


def _normalize(values: Sequence[float]) -> list[float]:
    total = sum(values)
    return [v / total for v in values]


def _kl(p: Sequence[float], q: Sequence[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def js_divergence(true_scores_m0: Sequence[float], true_scores_m2: Sequence[float]) -> float:
    """Plain Jensen-Shannon divergence (natural log) of the normalised true-object scores."""
    if len(true_scores_m0) != len(true_scores_m2) or len(true_scores_m0) < 2:
        raise ValueError("distortion needs two equally long lists of at least 2 scores")
    p, q = _normalize(true_scores_m2), _normalize(true_scores_m0)
    m = [(pi + qi) / 2 for pi, qi in zip(p, q)]
    return max(0.0, (_kl(p, m) + _kl(q, m)) / 2)  # >= 0; rounding gives -1e-17 for equal lists


def distortion(true_scores_m0: Sequence[float], true_scores_m2: Sequence[float]) -> float:
    """D = JS / k: the reference's KLDivLoss(reduction='batchmean') on a 1-D vector divides by k."""
    return js_divergence(true_scores_m0, true_scores_m2) / len(true_scores_m0)


# --------------------------------------------------------------------------- aggregates

Z_95 = 1.959963984540054


def wilson_interval(successes: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (stays inside [0, 1] for small n)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + Z_95**2 / n
    centre = (p + Z_95**2 / (2 * n)) / denom
    half = Z_95 * math.sqrt(p * (1 - p) / n + Z_95**2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """95% normal-approximation interval of a mean (the sample sd / sqrt(n))."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan)
    mean = sum(values) / n
    if n == 1:
        return (mean, mean)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = Z_95 * math.sqrt(var / n)
    return (mean - half, mean + half)


def aggregate(name: str, values: Sequence[float]) -> dict[str, float | int]:
    """Dataset-level value of one metric in %, with its 95% interval and n."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    n = len(clean)
    if n == 0:
        return {"value": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean = sum(clean) / n
    if name in BINARY_METRICS and all(v in (0, 1) for v in clean):
        low, high = wilson_interval(sum(clean), n)
    else:
        low, high = mean_interval(clean)
    return {"value": 100 * mean, "low": 100 * low, "high": 100 * high, "n": n}
