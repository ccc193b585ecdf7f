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
    """95% Wilson score interval of a proportion (stays inside [0, 1] for small n).

    Also used for a mean of values in [0, 1] (``successes`` their sum): no such variable with mean p varies more
    than a 0/1 one (p(1 - p)), so the interval is conservative, and n equal values still get a width.
    """
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + Z_95**2 / n
    centre = (p + Z_95**2 / (2 * n)) / denom
    half = Z_95 * math.sqrt(p * (1 - p) / n + Z_95**2 / (4 * n * n)) / denom
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))  # rounding never puts p outside


# Each metric's range: an interval never leaves it. CM and TFD are (s - s') / s of probabilities: at most 1, and CM
# is clipped at -1. JS, in nats, is at most ln 2; D = JS / k with k >= 2 true objects, so at most ln 2 / 2.
METRIC_RANGES = {"Succ": (0.0, 1.0), "CS_exp": (0.0, 1.0), "CS_imp": (0.0, 1.0), "IR": (0.0, 1.0), "FR": (0.0, 1.0),
                 "CM": (-1.0, 1.0), "TFD": (-math.inf, 1.0), "D": (0.0, math.log(2) / 2), "JS": (0.0, math.log(2))}
# Student's t, 97.5% quantile, for 1..30 degrees of freedom (beyond: the Cornish-Fisher expansion below).
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
          2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """Student's t 97.5% quantile (a table to 30 degrees of freedom, then the expansion, within 1e-4)."""
    if df <= len(_T_975):
        return _T_975[df - 1]
    z = Z_95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_interval(values: Sequence[float], bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float]:
    """95% Student-t interval of a mean, clipped to ``bounds``; sums are exact (``math.fsum``), so the interval does
    not depend on the order the values come in. One value: the value itself (no spread to estimate)."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan)
    mean = math.fsum(values) / n
    if n == 1:
        return (mean, mean)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = t_quantile_975(n - 1) * math.sqrt(var / n)
    return (max(bounds[0], mean - half), min(bounds[1], mean + half))


def format_aggregate(cell: dict | None) -> str:
    """An aggregate as the tables and the terminal show it: ``value [low, high]`` in %, or "-" when it has no value."""
    if not cell or cell.get("n", 0) == 0 or cell["value"] is None or math.isnan(cell["value"]):
        return "-"
    value, low, high = (round(cell[k], digits) + 0.0 for k, digits in (("value", 2), ("low", 1), ("high", 1)))  # no "-0.00"
    return f"{value:.2f} [{low:.1f}, {high:.1f}]"  # the interval as it is: it may be lopsided


def aggregate(name: str, values: Sequence[float]) -> dict[str, float | int]:
    """Dataset-level value of one metric in %, with its 95% interval and n."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    n = len(clean)
    if n == 0:
        return {"value": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    total = math.fsum(clean)  # exact: the same whatever order shards and workers wrote the records in
    mean = total / n
    if METRIC_RANGES.get(name) == (0.0, 1.0):  # a 0/1 rate, or a mean of values in [0, 1] (RoundEdit's Succ, IR)
        low, high = wilson_interval(total, n)
    else:
        low, high = mean_interval(clean, METRIC_RANGES.get(name, (-math.inf, math.inf)))
    return {"value": 100 * mean, "low": 100 * low, "high": 100 * high, "n": n}
