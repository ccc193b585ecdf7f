"""Render the HTML report of one or several runs with Jinja2 (template: reports/templates/report.html.j2).

Rows are grouped by model, then editor, so several runs side by side give
the paper's comparison on the user's own model.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from harness.general_ability import general_ability_lines
from harness.records import CaseRecord
from pitfalls_benchmark.metrics import HIGHER_IS_BETTER
from pitfalls_benchmark.splits import CONFLICT_SPLITS, ROUND_SPLITS, SPLIT_ORDER
from reports.charts import Line, Series, bar_chart, line_chart, strip_plot
from reports.lifelong import lifelong_curves
from reports.paper_numbers import published_row
from reports.runs import Run, load_run
from reports.tables import PAPER_LAYOUT, format_cell

SCORE_KEY = re.compile(r"^(m[012]|single)_(.+)$")
STAGES = (("m0", "before (M0)"), ("m1", "after edit 1 (M1)"), ("m2", "after edit 2 (M2)"), ("single", "edit alone"))


@dataclass
class Cell:
    text: str  # value [95% interval], or "-"
    n: int
    value: float | None
    paper: float | None = None
    best: bool = False


@dataclass
class TableRow:
    run_id: str
    label: str
    cells: list[Cell]
    setting_note: str = ""  # "not the paper's setting: ..." (empty for a run in the paper's setting)


@dataclass
class Table:
    title: str
    columns: list[tuple[str, str]]  # (column title, arrow)
    rows: list[TableRow]


@dataclass
class ModelGroup:
    model: str
    tables: list[Table]


@dataclass
class CaseRow:
    run_id: str
    run_label: str
    case_id: str
    split: str
    group: str
    status: str
    pitfall: bool
    metrics: dict[str, float]
    seconds: float
    edits: list[str]
    score_rows: list[tuple[str, list[str]]]  # quantity, one text per stage
    notes: list[str]
    message: str
    generated: list[str] = field(default_factory=list)  # --generation: "prompt => answer" (untrusted text: escaped)


@dataclass
class RunView:
    run_id: str
    label: str
    model: str
    editor: str
    folder: str
    summary_link: str | None
    cases_link: str
    finished: bool
    incomplete: dict[str, str]
    config_items: list[tuple[str, str]]
    hparams_json: str
    n_cases: int
    notices: list[str] = field(default_factory=list)  # records left out of the run's numbers, and why
    generation: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # --generation: one row per split
    general_ability: list[str] = field(default_factory=list)  # --general-ability: one line per measure


@dataclass
class ReportView:
    title: str
    runs: list[RunView]
    groups: list[ModelGroup]
    charts: list[tuple[str, Any]] = field(default_factory=list)
    cases: list[CaseRow] = field(default_factory=list)
    metric_names: list[str] = field(default_factory=list)


def _cell(split_summary: dict | None, metric: str, paper: float | None) -> Cell:
    cell = (split_summary or {}).get("metrics", {}).get(metric)
    if not cell or not cell.get("n") or cell.get("value") is None or math.isnan(cell["value"]):
        return Cell("-", 0, None, paper)
    return Cell(format_cell(cell), int(cell["n"]), float(cell["value"]), paper)


def _tables(runs: list[tuple[str, Run]]) -> list[Table]:
    tables = []
    for title, columns in PAPER_LAYOUT:
        present = [c for c in columns if any(c[1] in run.splits for _, run in runs)]
        if not present:
            continue
        rows = []
        for run_id, run in runs:
            paper = published_row(run.model, run.editor) if run.paper_setting else {}
            cells = [_cell(run.splits.get(split), metric, paper.get(name)) for name, split, metric in present]
            rows.append(TableRow(run_id, run.label, cells, run.paper_setting_note))
        for j, (_, _, metric) in enumerate(present):
            values = [r.cells[j].value for r in rows if r.cells[j].value is not None]
            if len(set(values)) > 1:  # a column where every run ties marks nothing
                best = max(values) if HIGHER_IS_BETTER[metric] else min(values)
                for r in rows:
                    r.cells[j].best = r.cells[j].value == best
        tables.append(Table(title, [(name, "↑" if HIGHER_IS_BETTER[metric] else "↓") for name, _, metric in present], rows))
    return tables


def _fmt_score(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _score_rows(scores: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Scores as quantity x stage; a round case's per-true-object lists become one row per object."""
    table: dict[str, dict[str, str]] = {}
    labels = scores.get("true_objects") or []
    for key, value in scores.items():
        found = SCORE_KEY.match(key)
        if not found:
            continue
        stage, quantity = found.groups()
        if isinstance(value, list):
            for label, v in zip(labels, value):
                table.setdefault(f"{quantity}: {label}", {})[stage] = _fmt_score(v)
        else:
            name = f"{quantity}: {scores['new_object']}" if quantity == "new" and "new_object" in scores else quantity
            table.setdefault(name, {})[stage] = _fmt_score(value)
    return [(name, [stages.get(s, "") for s, _ in STAGES]) for name, stages in table.items()]


def _case_rows(runs: list[tuple[str, Run]]) -> list[CaseRow]:
    rows = []
    for run_id, run in runs:
        for r in run.records:
            rows.append(CaseRow(
                run_id, run.label, str(r.case_id), str(r.split), _group(r), str(r.status), bool(r.pitfall),
                {k: v for k, v in (r.metrics or {}).items() if isinstance(v, (int, float))},
                float((r.seconds_edit or 0) + (r.seconds_eval or 0)), [str(e) for e in r.edits or []],
                _score_rows(r.scores or {}), [str(n) for n in r.notes or []], str(r.pitfall_message or r.error or ""),
                [str(g) for g in r.generated or []],
            ))
    return rows


def _group(record: CaseRecord) -> str:
    return str(record.group or "?")


def _charts(runs: list[tuple[str, Run]]) -> list[tuple[str, Any]]:
    charts = []
    splits = [s for s in SPLIT_ORDER if any(s in run.splits for _, run in runs)]
    series = [Series(run.label, [100 * run.splits[s]["pitfalls"] / run.splits[s]["n"] if s in run.splits and run.splits[s]["n"] else None
                                 for s in splits]) for _, run in runs]
    if splits:
        charts.append(("Pitfall rate per split (% of cases whose item failed)", bar_chart("Pitfall rate per split", splits, series)))
    for metric, metric_splits, low, high in (("CM", CONFLICT_SPLITS, -100.0, 100.0), ("D", ROUND_SPLITS, 0.0, None)):
        rows = []
        for index, (_, run) in enumerate(runs):
            for split in metric_splits:
                values = [100 * r.metrics[metric] for r in run.records if r.split == split and r.ok and metric in r.metrics]
                if values:
                    rows.append((f"{run.editor} · {split}", values, index))
        if rows:
            top = high if high is not None else max(max(v) for _, v, _ in rows) * 1.05 or 1.0
            charts.append((f"Distribution of {metric} per case (%; bar = median)", strip_plot(f"{metric} per case", rows, low, top)))
    groups = sorted({(r.split, _group(r)) for _, run in runs for r in run.records if r.ok},
                    key=lambda g: (SPLIT_ORDER.index(g[0]) if g[0] in SPLIT_ORDER else 99, str(g[1])))
    if groups:
        per_group = []
        for _, run in runs:
            values = []
            for split, group in groups:
                cases = [r for r in run.records if r.ok and r.split == split and _group(r) == group]
                values.append(100 * sum(r.pitfall for r in cases) / len(cases) if cases else None)
            per_group.append(Series(run.label, values))
        names = [f"{split} · {group}" for split, group in groups]
        charts.append(("Pitfall rate per rule or relation (%)", bar_chart("Pitfall rate per rule or relation", names, per_group)))
    for title, curves in lifelong_curves([run for _, run in runs]):
        lines = [Line(c.label, [(p.x, p.value, p.low, p.high) for p in c.points], c.reference) for c in curves]
        charts.append((f"Lifelong: {title} against the edits already applied (binned, 95% band; dashed: the fresh model)",
                       line_chart(title, "edits applied", lines)))
    return charts


def _run_view(run_id: str, run: Run, out_dir: Path) -> RunView:
    cfg = run.config
    shown = ("model", "model_family", "model_fingerprint", "editor", "device", "dtype", "seed", "mle", "dataset_dir", "limit",
             "stats_corpus", "stats_tokens", "hparams_file", "git_commit")
    items = [(k, str(cfg[k])) for k in shown if k in cfg]
    items += [(f"version {k}", str(v)) for k, v in (cfg.get("versions") or {}).items()]
    link = lambda p: os.path.relpath(Path(p).resolve(), out_dir).replace(os.sep, "/")
    summary = run.folder / "summary.json"
    generation = [(split, str(info["generation"]["n"]), str(info["pitfalls"]), str(info["generation"]["pitfalls"]),
                   format_cell(info["generation"]["agreement"])) for split, info in run.splits.items() if "generation" in info]
    return RunView(run_id, run.label, run.model, run.editor, str(run.folder), link(summary) if summary.is_file() else None,
                   link(run.folder / "cases.jsonl"), run.finished, run.incomplete_splits(), items,
                   json.dumps(cfg.get("hparams", {}), indent=1, ensure_ascii=False), len(run.records), run.notices, generation,
                   general_ability_lines([r for r in run.records if r.ok], cfg))


def build_view(runs: list[Run], out_dir: Path) -> ReportView:
    ordered = sorted(runs, key=lambda r: r.sort_key)
    with_ids = [(f"run-{i}", run) for i, run in enumerate(ordered)]
    models = sorted({run.model for run in ordered})
    groups = [ModelGroup(model, _tables([(rid, run) for rid, run in with_ids if run.model == model])) for model in models]
    # Only the harness's own metric names: they become HTML attribute names, which autoescaping does not cover.
    metric_names = sorted({m for _, run in with_ids for r in run.records for m in r.metrics if m in HIGHER_IS_BETTER},
                          key=lambda m: list(HIGHER_IS_BETTER).index(m) if m in HIGHER_IS_BETTER else 99)
    title = "Knowledge-editing pitfalls: " + ", ".join(sorted({f"{r.model} {r.editor}" for r in ordered}))
    return ReportView(title, [_run_view(rid, run, out_dir) for rid, run in with_ids], groups, _charts(with_ids),
                      _case_rows(with_ids), metric_names)


def environment() -> Environment:
    return Environment(loader=PackageLoader("reports", "templates"), autoescape=select_autoescape(["html", "j2"]),
                       trim_blocks=True, lstrip_blocks=True)


def render_report(runs: list[str | Path | Run], out_file: str | Path) -> Path:
    """Write the report of these runs (run folders, or runs already loaded) to ``out_file``; returns its path."""
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    view = build_view([run if isinstance(run, Run) else load_run(run) for run in runs], out.parent.resolve())
    html = environment().get_template("report.html.j2").render(view=view)
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out
