"""The lifelong view of sequential runs: pitfall rates and key metrics against the number of edits already applied.

A sequential run's records carry ``chain_position`` (edits applied on the
chain before the case). Cases are binned by it; each bin gets the metric's
value with its 95% interval (Wilson for rates, normal for means, as in the
summaries). The fresh-model value of the same editor and model, when a run
without ``--sequential`` is in the report, is the reference line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.records import CaseRecord, mean_with_interval
from pitfalls_benchmark import metrics as M
from pitfalls_benchmark.splits import CONFLICT_SPLITS, ROUND_SPLITS, SPLIT_ORDER
from reports.runs import Run

BINS = 6  # about this many bins along a chain

# (title, which splits, the metric; "pitfall" = share of cases whose pitfall showed, "retention" = earlier edits that hold)
CURVES = (
    ("Pitfall rate, ConflictEdit (%)", CONFLICT_SPLITS, "pitfall"),
    ("Pitfall rate, RoundEdit (%)", ROUND_SPLITS, "pitfall"),
    ("CS_imp (%)", ("reverse", "composite"), "CS_imp"),
    ("CM (%)", CONFLICT_SPLITS, "CM"),
    ("IR (%)", ROUND_SPLITS, "IR"),
    ("FR (%)", ROUND_SPLITS, "FR"),
    ("D (%)", ROUND_SPLITS, "D"),
    ("Retention of earlier edits (%)", tuple(SPLIT_ORDER), "retention"),
)


@dataclass(frozen=True)
class Point:
    low_edge: int  # the bin holds positions low_edge .. high_edge
    high_edge: int
    value: float  # in %
    low: float
    high: float
    n: int

    @property
    def x(self) -> float:
        return (self.low_edge + self.high_edge) / 2


@dataclass(frozen=True)
class Curve:
    label: str
    points: list[Point]
    reference: float | None  # the same metric on the fresh model (a run without --sequential), in %


def is_sequential(run: Run) -> bool:
    return run.config.get("sequential") is not None and any(r.chain_position is not None for r in run.records)


def bin_width(last_position: int, bins: int = BINS) -> int:
    """A round bin width giving about ``bins`` bins over positions 0..last_position."""
    raw = max(1, math.ceil((last_position + 1) / bins))
    for nice in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if nice >= raw:
            return nice
    return raw


def _values(records: list[CaseRecord], splits: tuple[str, ...], metric: str) -> tuple[str, list[float], list[int]]:
    """The aggregate's metric name, per-case values and their weights (retention: one value per measurement)."""
    chosen = [r for r in records if r.ok and r.split in splits]
    if metric == "pitfall":
        return "FR", [float(r.pitfall) for r in chosen], [1] * len(chosen)  # FR is a 0/1 metric: Wilson intervals
    if metric == "retention":
        measured = [r.retention for r in records if r.ok and r.retention and r.retention.get("sample")]
        return "retention", [m["held"] / m["sample"] for m in measured], [int(m["sample"]) for m in measured]
    values = [r.metrics[metric] for r in chosen if metric in r.metrics and not math.isnan(r.metrics[metric])]
    return metric, values, [1] * len(values)


def _point(name: str, values: list[float], weights: list[int], low_edge: int, high_edge: int) -> Point | None:
    if not values:
        return None
    if name == "retention":  # pooled: held / checked over the bin's measurements, Wilson interval
        held, total = sum(v * w for v, w in zip(values, weights)), sum(weights)
        low, high = M.wilson_interval(round(held), total)
        return Point(low_edge, high_edge, 100 * held / total, 100 * low, 100 * high, total)
    cell = M.aggregate(name, values)
    return Point(low_edge, high_edge, cell["value"], cell["low"], cell["high"], int(cell["n"]))


def _position(record: CaseRecord, metric: str) -> int | None:
    if metric == "retention" and record.retention:
        return int(record.retention.get("after_edits", record.chain_position or 0))
    return record.chain_position


def curve_points(records: list[CaseRecord], splits: tuple[str, ...], metric: str, width: int) -> list[Point]:
    positions = [p for r in records if (p := _position(r, metric)) is not None]
    if not positions:
        return []
    points = []
    for start in range(0, max(positions) + 1, width):
        in_bin = [r for r in records if (p := _position(r, metric)) is not None and start <= p < start + width]
        name, values, weights = _values(in_bin, splits, metric)
        point = _point(name, values, weights, start, start + width - 1)
        if point is not None:
            points.append(point)
    return points


def _reference(runs: list[Run], run: Run, splits: tuple[str, ...], metric: str) -> float | None:
    fresh = [r for r in runs if not is_sequential(r) and r.model == run.model and r.editor == run.editor]
    if not fresh or metric == "retention":
        return None
    name, values, weights = _values(fresh[0].records, splits, metric)
    point = _point(name, values, weights, 0, 0)
    return point.value if point else None


def lifelong_curves(runs: list[Run]) -> list[tuple[str, list[Curve]]]:
    """Per curve of ``CURVES``: one line per sequential run (editors overlaid), with the fresh-model reference."""
    sequential = [run for run in runs if is_sequential(run)]
    if not sequential:
        return []
    last = max(p for run in sequential for r in run.records for p in (r.chain_position, _position(r, "retention")) if p is not None)
    width = bin_width(last)
    charts = []
    for title, splits, metric in CURVES:
        curves = [Curve(run.label, points, _reference(runs, run, splits, metric))
                  for run in sequential if (points := curve_points(run.records, splits, metric, width))]
        if curves:
            charts.append((title, curves))
    return charts + general_ability_curves(sequential, width)


def general_ability_curves(sequential: list[Run], width: int) -> list[tuple[str, list[Curve]]]:
    """--general-ability on a chain: each measure against the edits applied (binned means, Student-t bands), the
    unedited model's value as the reference line."""
    charts = []
    for name in sorted({n for run in sequential for r in run.records for n in r.general_ability}):
        curves = []
        for run in sequential:
            measured = ability_measured(run, name)
            points = []
            for start in range(0, max((p for p, _ in measured), default=-1) + 1, width):
                values = [v for p, v in measured if start <= p < start + width]
                if values:
                    m = mean_with_interval(values, name)
                    points.append(Point(start, start + width - 1, m["mean"], m["low"], m["high"], m["n"]))
            if points:
                curves.append(Curve(run.label, points, (run.config.get("general_ability") or {}).get("unedited", {}).get(name)))
        if curves:
            charts.append((f"General ability, {name} (not in %; the reference line: the unedited model)", curves))
    return charts


def ability_measured(run: Run, name: str) -> list[tuple[int, float]]:
    """(edits applied, value) of each measurement of ``name`` on a chain: measured after its case's edits."""
    return sorted((r.chain_position + len(r.edits), r.general_ability[name]) for r in run.records
                  if r.ok and name in r.general_ability and r.chain_position is not None)


def _distorted_round_trips(records: list[CaseRecord]) -> str:
    """RoundEdit cases whose round trip lowered another true object (FR = 1), read against the model just before the
    case (the chain's reading) and against the original model (``original_metrics``), of the finished ones."""
    trips = [r for r in records if r.ok and r.split in ROUND_SPLITS and "FR" in r.metrics]
    if not trips:
        return "-"
    on_chain = sum(1 for r in trips if r.metrics["FR"] == 1)
    against_original = [r.original_metrics["FR"] == 1 for r in trips if r.original_metrics and "FR" in r.original_metrics]
    original = str(sum(against_original)) if len(against_original) == len(trips) else "-"
    return f"{on_chain} / {original} of {len(trips)}"


def _ability_span(run: Run, name: str) -> str:
    measured = ability_measured(run, name)
    unedited = (run.config.get("general_ability") or {}).get("unedited", {}).get(name)
    if not measured or unedited is None:
        return "-"
    (first_at, first), (last_at, last) = measured[0], measured[-1]
    return f"{unedited:.3g} -> {first:.3g} (after {first_at}) -> {last:.3g} (after {last_at})"


def first_and_last_bins(records: list[CaseRecord]) -> dict[str, tuple[Point, Point]]:
    """Per split of a sequential run: the pitfall rate in the first and the last bin of the chain."""
    positions = [r.chain_position for r in records if r.chain_position is not None]
    if not positions:
        return {}
    width = bin_width(max(positions))
    result = {}
    for split in SPLIT_ORDER:
        points = curve_points(records, (split,), "pitfall", width)
        if points:
            result[split] = (points[0], points[-1])
    return result


def _span(points: list[Point]) -> str:
    if not points:
        return "-"
    first, last = points[0], points[-1]
    return (f"{first.value:.0f}% (n={first.n}, edits {first.low_edge}-{first.high_edge}) -> "
            f"{last.value:.0f}% (n={last.n}, edits {last.low_edge}-{last.high_edge})")


def lifelong_table(runs: list[Run]) -> str:
    """A Markdown table of sequential runs: each curve's first and last bin, the chain's length and its time."""
    sequential = [run for run in runs if is_sequential(run)]
    titles = [title for title, _, _ in CURVES if title.startswith(("Pitfall", "IR", "Retention"))]
    measures = sorted({n for run in sequential for r in run.records for n in r.general_ability})  # --general-ability
    heads = titles + ["RoundEdit cases with FR = 1: on the chain / against the original model"]
    heads += [f"{name}: unedited -> first -> last measurement (edits)" for name in measures]
    lines = ["| run | edits | " + " | ".join(heads) + " | edit + eval s |", "|---|---|" + "---|" * len(heads) + "---|"]
    for run in sequential:
        last = max((r.chain_position or 0) + len(r.edits) for r in run.records)
        width = bin_width(last)
        cells = [_span(curve_points(run.records, splits, metric, width)) for title, splits, metric in CURVES if title in titles]
        cells.append(_distorted_round_trips(run.records))
        cells += [_ability_span(run, name) for name in measures]
        seconds = sum(r.seconds_edit + r.seconds_eval for r in run.records)
        lines.append(f"| {run.label} | {last} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    return "\n".join(lines)
