"""The dataset-level metrics in the layout of the paper's Tables (docs/paper-results.md)."""

from __future__ import annotations

from typing import Any

from pitfalls_benchmark import metrics as M
from pitfalls_benchmark.metrics import HIGHER_IS_BETTER
from pitfalls_benchmark.splits import paper_layout

# (benchmark title, [(column title, split, metric)]), from the splits table
PAPER_LAYOUT = paper_layout()


def format_cell(cell: dict[str, Any] | None) -> str:
    return M.format_aggregate(cell)


def paper_tables(splits: dict[str, Any], label: str) -> str:
    """One text table per benchmark that has results: value in % [its 95% interval]."""
    blocks = []
    for title, columns in PAPER_LAYOUT:
        present = [c for c in columns if c[1] in splits]
        if not present:
            continue
        heads = ["run"] + [f"{name} {'^' if HIGHER_IS_BETTER[metric] else 'v'}" for name, _, metric in present]
        cells = [label] + [format_cell(splits[split]["metrics"].get(metric)) for _, split, metric in present]
        counts = ["n"] + [str(splits[split]["n"]) for _, split, _ in present]
        widths = [max(len(h), len(c), len(n)) for h, c, n in zip(heads, cells, counts)]
        line = lambda row, widths=widths: "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |"
        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        blocks.append("\n".join([f"{title} (%, [95% interval])", line(heads), rule, line(cells), line(counts)]))
    return "\n\n".join(blocks)


def markdown_tables(runs: list[Any]) -> str:
    """The paper's Tables 1 and 2 as markdown, one row per run (``reports.runs.Run``): value [its 95% interval],
    the cases per split, and the run's edit + scoring time. Rows in the report's order (``Run.sort_key``)."""
    runs = sorted(runs, key=lambda run: run.sort_key)
    blocks = []
    for title, columns in PAPER_LAYOUT:
        splits = list(dict.fromkeys(split for _, split, _ in columns))
        present = [run for run in runs if any(split in run.splits for split in splits)]
        if not present:
            continue
        heads = ["editor"] + [f"{name} {'^' if HIGHER_IS_BETTER[metric] else 'v'}" for name, _, metric in columns]
        heads += [f"n ({'/'.join(splits)})", "minutes"]
        lines = [f"**{title}** (%, [95% interval])", "", "| " + " | ".join(heads) + " |",
                 "|" + "|".join("---" for _ in heads) + "|"]
        for run in present:
            cells = [run.folder.name]
            cells += [format_cell(run.splits.get(split, {}).get("metrics", {}).get(metric)) for _, split, metric in columns]
            cells.append("/".join(str(run.splits.get(split, {}).get("n", 0)) for split in splits))
            seconds = sum(r.seconds_edit + r.seconds_eval for r in run.records if r.split in splits)
            cells.append(f"{seconds / 60:.0f}")
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def generation_table(runs: list[Any]) -> str:
    """Teacher-forced against generated verdicts (``--generation``) as markdown, one row per run and split: the cases
    with a generated twin, the pitfalls each way, and how often the two verdicts agree [95% interval]."""
    runs = sorted(runs, key=lambda run: run.sort_key)
    heads = ["editor", "split", "n", "pitfalls, teacher-forced", "pitfalls, generated", "verdicts agree (%, [95% interval])"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    for run in runs:
        for split, info in run.splits.items():
            generated = [r for r in run.records if r.ok and r.split == split and r.generation_pitfall is not None]
            if "generation" not in info or not generated:
                continue
            taught = sum(1 for r in generated if r.pitfall)
            lines.append(f"| {run.folder.name} | {split} | {len(generated)} | {taught} | {info['generation']['pitfalls']} | "
                         f"{format_cell(info['generation']['agreement'])} |")
    if len(lines) == 2:
        return "no run here has --generation records"
    return "\n".join(lines)
