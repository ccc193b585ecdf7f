"""The knowledge filter: keep the cases whose facts the model already knows.

The published splits were filtered per model (GPT-2 XL and GPT-J files
differ). A fact ``(s, r, o)`` counts as known when the model's ``P(o | p)``
on the rewrite prompt beats that of the case's counterfactual object. The
facts checked are the real ones a case starts from: every edit whose
``(s, r, o)`` is one of the case's triples (so not reverse or coverage
edit 2, whose old object only holds after edit 1), and a round case's edit.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from pitfalls_editkit.facts import fill
from pitfalls_editkit.scoring import Scorer


@dataclass
class KnowledgeReport:
    model: str
    dropped: dict[str, int] = field(default_factory=dict)  # per split
    kept: dict[str, int] = field(default_factory=dict)
    checked_per_relation: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    known_per_relation: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def as_dict(self) -> dict:
        relations = sorted(self.checked_per_relation)
        return {"model": self.model, "kept": self.kept, "dropped": self.dropped,
                "known_fraction_per_relation": {
                    r: {"checked": self.checked_per_relation[r], "known": self.known_per_relation[r],
                        "fraction": round(self.known_per_relation[r] / self.checked_per_relation[r], 4)}
                    for r in relations}}


def _checked_edits(record: dict) -> list[dict]:
    if "edit" in record:
        return [record["edit"]]
    triples = {(t["subject"]["id"], t["relation"]["id"], t["object"]["id"]) for t in record["triples"]}
    return [e for e in record["edits"] if (e["subject"]["id"], e["relation"]["id"], e["object"]["id"]) in triples]


def filter_known(records: dict[str, list[dict]], scorer: Scorer, model_name: str) -> tuple[dict[str, list[dict]], KnowledgeReport]:
    """Split -> the records whose checked facts are all known, and what was dropped."""
    report = KnowledgeReport(model_name)
    verdicts: dict[tuple[str, str, str], bool] = {}
    kept_records: dict[str, list[dict]] = {}
    for split, split_records in records.items():
        kept = []
        for record in split_records:
            known_all = True
            for edit in _checked_edits(record):
                prompt = fill(edit["relation"]["prompt"], edit["subject"]["label"])
                key = (prompt, edit["object"]["label"], edit["new_object"]["label"])
                if key not in verdicts:
                    true_score, new_score = scorer.fact_scores([prompt], [key[1], key[2]])
                    verdicts[key] = true_score > new_score
                    report.checked_per_relation[edit["relation"]["id"]] += 1
                    report.known_per_relation[edit["relation"]["id"]] += verdicts[key]
                known_all = known_all and verdicts[key]
            if known_all:
                kept.append(record)
        kept_records[split] = kept
        report.kept[split], report.dropped[split] = len(kept), len(split_records) - len(kept)
    return kept_records, report
