"""The graph, relations and rules inside a folder of published-format files.

Lets a user draw fresh counterfactuals (another seed, more cases) from the
paper's facts: the true triples of every case become the graph, relation
prompts come from the records and paraphrases from the prompt files, and the
rules from the ``rule`` and ``type`` fields.
"""

from __future__ import annotations

from pathlib import Path

from pitfalls_benchmark.datasets import DatasetError, load_dataset
from pitfalls_benchmark.splits import BENCHMARKS, CONFLICT_SPLITS, ROUND_SPLITS
from pitfalls_editkit.facts import Entity, Relation
from pitfalls_generator.graph import KnowledgeGraph
from pitfalls_generator.schema import RelationSpec, Rules, parse_rules


def read_published(root: str | Path) -> tuple[KnowledgeGraph, dict[str, RelationSpec], Rules]:
    dataset = load_dataset(root)
    paraphrases = {**dataset.round_prompts, **dataset.conflict_prompts}
    relations: dict[str, Relation] = {}
    labels: dict[str, str] = {}  # the first label seen for an id (a few published ids carry two)
    facts: list[tuple[Entity, str, Entity]] = []
    rules: dict[str, set[str]] = {"coverage": set(), "reverse": set(), "composite": set(), "round": set()}

    def fact(subject: Entity, relation: Relation, obj: Entity) -> None:
        relations.setdefault(relation.id, relation)
        s, o = (Entity(e.id, labels.setdefault(e.id, e.label)) for e in (subject, obj))
        facts.append((s, relation.id, o))

    for split in CONFLICT_SPLITS:
        for case in dataset.cases.get(split, []):
            for t in case.triples:
                fact(t.subject, t.relation, t.object)
            if split == "coverage":
                rules["coverage"].add(case.edits[0].relation.id)
            elif case.rule:
                rules[split].add(case.rule)
    for split in ROUND_SPLITS:
        for case in dataset.cases.get(split, []):
            for obj in case.true_objects:
                fact(case.edit.subject, case.edit.relation, obj)
            rules["round"].add(case.edit.relation.id)
    graph = KnowledgeGraph(sources=[{"name": f"published-format files in {root}", "license": "as published (MIT for the paper's data)"}])
    for s, r, o in facts:
        graph.add(s, r, o)
    missing = sorted(r for r in relations if r not in paraphrases)
    if missing:
        names = " / ".join(b.prompts_file for b in BENCHMARKS.values())
        raise DatasetError(f"{root}: relation(s) {', '.join(missing)} have no paraphrases in {names}")
    specs = {rid: RelationSpec(rel, paraphrases[rid]) for rid, rel in relations.items()}
    return graph, specs, parse_rules({k: sorted(v) for k, v in rules.items()}, str(root))
