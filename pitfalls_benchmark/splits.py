"""The five splits of the benchmark: one table every module reads (loader, runner, records, plugin, report).

Each split says where its cases live, which benchmark it belongs to, the
metrics it reports (in the paper's column order, with the paper's column
titles), and its pitfall: the metric, the value at which the item fails,
and the message that explains a failure from the case's scores.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    name: str  # conflict | round
    title: str  # the paper's name
    prompts_file: str  # paraphrase templates of its relations
    marker_text: str


@dataclass(frozen=True)
class Split:
    name: str
    benchmark: str  # a key of BENCHMARKS
    file: str  # case file in a dataset folder (the published format)
    description: str
    columns: tuple[tuple[str, str], ...]  # (metric, column title); the paper's columns plus our JS
    pitfall_metric: str
    pitfall_value: float  # the item fails when pitfall_metric equals this
    pitfall_message: str  # str.format template over the case's scores, metrics and derived values
    not_on_chain: tuple[str, ...] = ()  # metrics a --sequential chain does not measure (they need the unedited model)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(metric for metric, _ in self.columns)

    def shows_pitfall(self, metrics: dict[str, float]) -> bool:
        return metrics[self.pitfall_metric] == self.pitfall_value


BENCHMARKS: dict[str, Benchmark] = {
    "conflict": Benchmark("conflict", "ConflictEdit", "conflict_prompts.json", "ConflictEdit cases (coverage, reverse, composite)"),
    "round": Benchmark("round", "RoundEdit", "round_prompts.json", "RoundEdit cases (easy, hard)"),
}

_IMPLIED_LOST = ("the implied fact lost to the first edit: score(query)={m2_query:.4g} <= "
                 "score(e1 object)={m2_e1_new:.4g} (CM={CM:.3f})")
_ROUND_LOWERED = "the round trip lowered {IR:.0%} of the other true objects ({lowered}); D={D:.4f}"

SPLITS: dict[str, Split] = {split.name: split for split in (
    Split("coverage", "conflict", "coverage_edit.json", "ConflictEdit coverage split",
          (("Succ", "Single Succ"), ("CS_exp", "Coverage CS"), ("CM", "Coverage CM")),
          "CS_exp", 0,
          "after both edits the first edit's object still wins: score(o2)={m2_e2_new:.4g} <= score(o1)={m2_e1_new:.4g}",
          not_on_chain=("Succ",)),
    Split("reverse", "conflict", "reverse_edit.json", "ConflictEdit reverse split",
          (("CS_exp", "Reverse CS_exp"), ("CS_imp", "Reverse CS_imp"), ("CM", "Reverse CM")),
          "CS_imp", 0, _IMPLIED_LOST),
    Split("composite", "conflict", "composite_edit.json", "ConflictEdit composite split",
          (("CS_exp", "Composite CS_exp"), ("CS_imp", "Composite CS_imp"), ("CM", "Composite CM"), ("TFD", "Composite TFD")),
          "CS_imp", 0, _IMPLIED_LOST),
    Split("easy", "round", "easy.json", "RoundEdit easy split",
          (("Succ", "Easy Succ"), ("D", "Easy D"), ("IR", "Easy IR"), ("FR", "Easy FR"), ("JS", "Easy JS")),
          "FR", 1, _ROUND_LOWERED),
    Split("hard", "round", "hard.json", "RoundEdit hard split",
          (("Succ", "Hard Succ"), ("D", "Hard D"), ("IR", "Hard IR"), ("FR", "Hard FR"), ("JS", "Hard JS")),
          "FR", 1, _ROUND_LOWERED),
)}

SPLIT_ORDER: tuple[str, ...] = tuple(SPLITS)
CONFLICT_SPLITS: tuple[str, ...] = tuple(s for s in SPLITS if SPLITS[s].benchmark == "conflict")
ROUND_SPLITS: tuple[str, ...] = tuple(s for s in SPLITS if SPLITS[s].benchmark == "round")
# Metrics we report that the paper does not (no published value exists for them).
NOT_IN_PAPER = frozenset({"JS"})


def splits_of(benchmark: str) -> tuple[str, ...]:
    return tuple(s for s in SPLITS if SPLITS[s].benchmark == benchmark)


def paper_layout() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """``[(benchmark title, [(column title, split, metric), ...])]`` in the paper's order."""
    return [(bench.title, [(title, split.name, metric) for split in SPLITS.values() if split.benchmark == bench.name
                           for metric, title in split.columns])
            for bench in BENCHMARKS.values()]
