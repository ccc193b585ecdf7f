"""Generate ConflictEdit and RoundEdit cases from a graph and rules, in the published JSON format.

Writing the published format means one loader (pitfalls_benchmark/datasets.py) reads the
paper's files and ours. Every choice is drawn from ``random.Random`` seeded by
``(seed, split)`` over sorted candidates, so the same graph, rules and seed
give the same cases. Counterfactual objects are drawn from the relation's
range (same type as the old object) and are never a true object of the fact.

Case shapes (as published):

* coverage ``r``: edit 1 ``(s, r, o -> o1)``, edit 2 ``(s, r, o1 -> o2)``;
* reverse ``A>B``: triples ``(s, A, o)``, ``(o, B, s)``; edit 1 ``(s, A, o -> o1)``,
  edit 2 ``(o1, B, s -> s2)``;
* composite ``A&B>C``: triples ``t0 = (s, A, m)`` (tied), ``t1 = (m, B, o)``,
  ``t2 = (s, C, o)``; edit 1 ``(m, B, o -> o1)``, edit 2 ``(s, C, o -> o2)``
  whose implied object after edit 1 is ``o1`` (written as ``true_object``);
* round ``r`` (1-to-N, 2 to 10 true objects): ``(s, r, o -> x)`` with ``x`` far
  from the true objects (easy) or near them (hard), see closeness.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from pitfalls_benchmark.splits import CONFLICT_SPLITS, ROUND_SPLITS
from pitfalls_editkit.facts import Entity
from pitfalls_generator.closeness import closeness_distances
from pitfalls_generator.graph import KnowledgeGraph
from pitfalls_generator.schema import RelationSpec, Rules

MIN_TRUE_OBJECTS, MAX_TRUE_OBJECTS = 2, 10


@dataclass(frozen=True)
class GenerationSettings:
    seed: int = 0
    max_cases: int | None = 300  # per split; None keeps every case the rules allow


class CaseBuilder:
    """Turns ids into published-format records and draws counterfactuals."""

    def __init__(self, graph: KnowledgeGraph, relations: dict[str, RelationSpec]) -> None:
        self.graph, self.relations = graph, relations

    def entity(self, entity_id: str) -> dict:
        e: Entity = self.graph.entities[entity_id]
        return {"id": e.id, "label": e.label}

    def relation(self, relation_id: str) -> dict:
        r = self.relations[relation_id].relation
        return {"id": r.id, "prompt": r.prompt, "query": r.query, "label": r.label}

    def triple(self, s: str, r: str, o: str) -> dict:
        return {"relation": self.relation(r), "subject": self.entity(s), "object": self.entity(o)}

    def edit(self, s: str, r: str, o: str, new: str) -> dict:
        return {**self.triple(s, r, o), "new_object": self.entity(new)}

    def counterfactual(self, rng: random.Random, s: str, r: str, exclude: set[str]) -> str | None:
        """An object of ``r``'s range that is not true for ``(s, r)`` and not in ``exclude``."""
        taken = self.graph.objects(s, r) | exclude | {s}
        choices = [o for o in self.graph.range(r) if o not in taken]
        return rng.choice(choices) if choices else None

    def single(self, s: str, r: str) -> str | None:
        objects = self.graph.objects(s, r)
        return next(iter(objects)) if len(objects) == 1 else None


def _coverage(b: CaseBuilder, rules: Rules, rng: random.Random) -> Iterator[dict]:
    for r in rules.coverage:
        for s in b.graph.subjects_with(r):
            o = b.single(s, r)
            o1 = o and b.counterfactual(rng, s, r, set())
            o2 = o1 and b.counterfactual(rng, s, r, {o1})
            if o2:
                yield {"triples": [b.triple(s, r, o)], "prerequisites": [], "type": "coverage",
                       "edits": [b.edit(s, r, o, o1), b.edit(s, r, o1, o2)]}


def _reverse(b: CaseBuilder, rules: Rules, rng: random.Random) -> Iterator[dict]:
    for rule in rules.reverse:
        for s in b.graph.subjects_with(rule.forward):
            for o in sorted(b.graph.objects(s, rule.forward)):
                if not b.graph.has(o, rule.inverse, s):
                    continue
                o1 = b.counterfactual(rng, s, rule.forward, set())
                s2 = o1 and b.counterfactual(rng, o1, rule.inverse, {s})
                if s2:
                    yield {"rule": rule.text, "triples": [b.triple(s, rule.forward, o), b.triple(o, rule.inverse, s)],
                           "prerequisites": [], "type": "reverse",
                           "edits": [b.edit(s, rule.forward, o, o1), b.edit(o1, rule.inverse, s, s2)]}


def _composite(b: CaseBuilder, rules: Rules, rng: random.Random) -> Iterator[dict]:
    for rule in rules.composite:
        for s in b.graph.subjects_with(rule.first):
            m = b.single(s, rule.first)
            o = m and b.single(m, rule.second)
            if not o or b.single(s, rule.implied) != o:
                continue
            o1 = b.counterfactual(rng, m, rule.second, set())
            o2 = o1 and b.counterfactual(rng, s, rule.implied, {o1})
            if o2:
                second = {**b.edit(s, rule.implied, o, o2), "true_object": b.entity(o1)}
                yield {"rule": rule.text,
                       "triples": [b.triple(s, rule.first, m), b.triple(m, rule.second, o), b.triple(s, rule.implied, o)],
                       "prerequisites": [0], "type": "composite", "edits": [b.edit(m, rule.second, o, o1), second]}


def _round(b: CaseBuilder, rules: Rules, rng: random.Random, split: str) -> Iterator[dict]:
    for r in rules.round:
        for s in b.graph.subjects_with(r):
            true = b.graph.objects(s, r)
            if not MIN_TRUE_OBJECTS <= len(true) <= MAX_TRUE_OBJECTS:
                continue
            candidates = [c for c in b.graph.range(r) if c not in true and c != s]
            if not candidates:
                continue
            distance = closeness_distances(b.graph, candidates, true, s)
            wanted = min(distance.values()) if split == "hard" else max(distance.values())
            o = rng.choice(sorted(true))
            x = rng.choice([c for c in candidates if distance[c] == wanted])
            yield {"type": f"1-{len(true)}@{r}", "edit": b.edit(s, r, o, x),
                   "true_objects": [b.entity(t) for t in sorted(true)], "closeness_hops": distance[x]}


def generate_cases(graph: KnowledgeGraph, relations: dict[str, RelationSpec], rules: Rules,
                   settings: GenerationSettings) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Split name -> published-format records (at most ``settings.max_cases`` each, in an order shuffled with
    the seed so that the first N cases mix rules and relations), and how many cases the rules allowed per split."""
    builder = CaseBuilder(graph, relations)
    makers = {"coverage": _coverage, "reverse": _reverse, "composite": _composite}
    out, available = {}, {}
    for split in (*CONFLICT_SPLITS, *ROUND_SPLITS):
        rng = random.Random(f"{settings.seed}:{split}")
        records = list(makers[split](builder, rules, rng) if split in makers else _round(builder, rules, rng, split))
        available[split] = len(records)
        rng.shuffle(records)
        out[split] = records[: settings.max_cases] if settings.max_cases is not None else records
    return out, available
