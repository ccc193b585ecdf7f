"""A knowledge graph of labelled entities and relation triples.

The generator only needs: which objects a subject has for a relation, which
entities a relation points to (its range: counterfactuals are drawn from it,
so a new object has the same type as the old one), and the neighbours of an
entity (for the closeness measure of easy/hard round cases).

Graphs come from our geography builder (pitfalls_generator/geography.py), a
user's triples file (JSON lines or TSV), or the triples inside a folder of
published-format files.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pitfalls_benchmark.datasets import DatasetError
from pitfalls_editkit.facts import Entity
from pitfalls_editkit.safe_json import JsonInputError, loads

TSV_COLUMNS = ("subject_id", "subject_label", "relation_id", "object_id", "object_label")


@dataclass(frozen=True)
class Triple:
    subject: str  # entity ids
    relation: str
    object: str


@dataclass
class KnowledgeGraph:
    """Entities by id and a set of triples, with the lookups the generator needs."""

    entities: dict[str, Entity] = field(default_factory=dict)
    triples: set[Triple] = field(default_factory=set)
    sources: list[dict] = field(default_factory=list)  # where the facts come from, with licences

    def add(self, subject: Entity, relation: str, obj: Entity, where: str = "") -> None:
        """Add a triple; ``where`` (file and line) names the place in messages."""
        for entity in (subject, obj):
            if not entity.label.strip() or not str(entity.id).strip():
                raise DatasetError(f"{where or 'a triple'}: entity {entity.id!r} needs a non-empty id and label")
            known = self.entities.setdefault(entity.id, entity)
            if known.label != entity.label:
                raise DatasetError(f"{where or 'a triple'}: entity {entity.id} has two labels: {known.label!r} and {entity.label!r}; "
                                   "give each id one label")
        self.triples.add(Triple(subject.id, relation, obj.id))
        self._index = None

    _index: dict | None = field(default=None, repr=False, compare=False)  # built on first lookup

    def _build_index(self) -> dict:
        if self._index is None:
            objects: dict[tuple[str, str], set[str]] = defaultdict(set)
            ranges: dict[str, set[str]] = defaultdict(set)
            neighbours: dict[str, set[str]] = defaultdict(set)
            for t in self.triples:
                objects[(t.subject, t.relation)].add(t.object)
                ranges[t.relation].add(t.object)
                neighbours[t.subject].add(t.object)
                neighbours[t.object].add(t.subject)
            self._index = {"objects": objects, "ranges": ranges, "neighbours": neighbours}
        return self._index

    def objects(self, subject: str, relation: str) -> set[str]:
        return self._build_index()["objects"].get((subject, relation), set())

    def range(self, relation: str) -> list[str]:
        """Every entity the relation points to, sorted (the type of its objects)."""
        return sorted(self._build_index()["ranges"].get(relation, set()))

    def neighbours(self, entity: str) -> set[str]:
        return self._build_index()["neighbours"].get(entity, set())

    def subjects_with(self, relation: str) -> list[str]:
        return sorted({s for (s, r) in self._build_index()["objects"] if r == relation})

    def has(self, subject: str, relation: str, obj: str) -> bool:
        return obj in self.objects(subject, relation)

    def relation_ids(self) -> set[str]:
        return {t.relation for t in self.triples}


# -------------------------------------------------------------------- readers


def read_triples_file(path: str | Path) -> KnowledgeGraph:
    """A user's graph: JSON lines ``{"subject": {id, label}, "relation": id, "object": {id, label}}`` or a TSV
    with the header ``subject_id subject_label relation_id object_id object_label``."""
    path = Path(path)
    graph = KnowledgeGraph(sources=[{"name": str(path), "license": "as given by the user"}])
    if not path.is_file():
        raise DatasetError(f"--triples {path}: no such file")
    try:
        return _read_triples(path, graph)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None


def _read_triples(path: Path, graph: KnowledgeGraph) -> KnowledgeGraph:
    with path.open(encoding="utf-8") as handle:
        if path.suffix.lower() in (".tsv", ".tab"):
            reader = csv.reader(handle, delimiter="\t")
            header = tuple(next(reader, ()))
            if header != TSV_COLUMNS:
                raise DatasetError(f"{path}: line 1: expected the header {' '.join(TSV_COLUMNS)} (tab-separated)")
            for line_no, row in enumerate(reader, start=2):
                if len(row) != len(TSV_COLUMNS) or not all(row):
                    raise DatasetError(f"{path}: line {line_no}: expected {len(TSV_COLUMNS)} non-empty tab-separated fields")
                graph.add(Entity(row[0], row[1]), row[2], Entity(row[3], row[4]), f"{path}: line {line_no}")
        else:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rec = loads(line, "")
                    subject, obj = _entity(rec["subject"]), _entity(rec["object"])
                    relation = str(rec["relation"])
                except (JsonInputError, KeyError, TypeError, ValueError) as exc:
                    raise DatasetError(f"{path}: line {line_no}: not a triple ({exc.__class__.__name__}: {exc})") from None
                graph.add(subject, relation, obj, f"{path}: line {line_no}")
    return graph


def _entity(obj: dict) -> Entity:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not isinstance(obj.get("label"), str):
        raise ValueError("expected {'id': str, 'label': str}")
    return Entity(obj["id"], obj["label"])


def graph_from_facts(facts: Iterable[tuple[Entity, str, Entity]], sources: list[dict]) -> KnowledgeGraph:
    graph = KnowledgeGraph(sources=sources)
    for subject, relation, obj in facts:
        graph.add(subject, relation, obj)
    return graph
