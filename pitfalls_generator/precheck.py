"""Conflict pre-check: does a batch of edit requests clash under the rules, before anything is edited?

    python -m pitfalls_generator.precheck EDITS --rules RULES [--facts TRIPLES] [--json OUT]

``EDITS`` is a JSON-lines file of edit requests in the published edit format
(``{"subject": {id, label}, "relation": {id, prompt}, "object": {...}, "new_object": {...}}``),
or a published case file (every case's edits are one batch; a ConflictEdit
case's triples count as facts). ``RULES`` is a rules file (``coverage``,
``reverse``, ``composite`` lists, as the generator reads) or a folder of
published-format files (the rules are read off its cases). Reported:

* **coverage**: two edits of one subject and relation to different new
  objects, where the relation is single-valued (a ``coverage`` relation that
  is not also a 1-to-N ``round`` relation) or one edit takes back the other's
  new object (``o -> o1`` then ``o1 -> o2``);
* **reverse** (rule ``A>B``: ``(s, A, o)`` implies ``(o, B, s)``): an edit
  ``(s, A, -> o*)`` implies ``(o*, B, s)``, and another edit sets ``(o*, B)`` to
  something else;
* **composite** (rule ``A&B>C``: ``(s, A, m)`` and ``(m, B, o)`` imply
  ``(s, C, o)``): an edit ``(m, B, -> o*)`` with a fact or edit ``(s, A, m)``
  implies ``(s, C, o*)``, and another edit sets ``(s, C)`` to something else;
* with facts (``--facts`` or a case's triples), **stale** implicit knowledge:
  a fact of the graph that a rule derives from a fact the batch changes, and
  that no edit of the batch touches (a warning, not a conflict).

A table on the terminal, the same as JSON with ``--json``; exit status 1 when
a conflict is found, 0 otherwise, 2 for a bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pitfalls_benchmark.datasets import ConflictCase, DatasetError, RoundCase, parse_edit
from pitfalls_editkit.facts import Edit, Fact, Relation
from pitfalls_editkit.safe_json import JsonInputError, loads
from pitfalls_generator.graph import read_triples_file
from pitfalls_generator.schema import Rules, parse_rules

Key = tuple[str, str]  # (subject id, relation id)


@dataclass(frozen=True)
class Finding:
    kind: str  # coverage | reverse | composite | stale
    edits: tuple[int, ...]  # indices into the batch
    rule: str
    why: str
    batch: str = ""  # which batch (a case id for a case file)

    @property
    def conflict(self) -> bool:
        return self.kind != "stale"


def _fact_text(subject: str, relation: str, obj: str) -> str:
    return f"({subject}, {relation}, {obj})"


def find_conflicts(edits: Sequence[Edit], rules: Rules, facts: Iterable[Fact] = ()) -> list[Finding]:
    """Every pair (or, with a fact, triple) of ``edits`` that clashes under ``rules``, then stale facts."""
    findings: list[Finding] = []
    facts = list(facts)
    single_valued = set(rules.coverage) - set(rules.round)  # a relation the rules also list as 1-to-N takes several objects
    sets: dict[Key, list[int]] = {}  # (subject, relation) -> the edits that set it
    for i, e in enumerate(edits):
        sets.setdefault((e.subject.id, e.relation.id), []).append(i)

    def contradicting(key: Key, value_id: str, exclude: int) -> list[int]:
        return [j for j in sets.get(key, []) if j != exclude and edits[j].new_object.id != value_id]

    for (_subject, relation), indices in sets.items():
        for a, i in enumerate(indices):
            for j in indices[a + 1 :]:
                e, f = edits[i], edits[j]
                if e.new_object.id == f.new_object.id:
                    continue
                retracts = f.object.id == e.new_object.id or e.object.id == f.new_object.id  # one edit takes back the other's object
                if relation in single_valued or retracts:
                    why = "takes back" if retracts else "single-valued:"
                    findings.append(Finding("coverage", (i, j), relation, f"{e.subject.label} {relation} {why} "
                                            f"{e.new_object.label} (edit {i}) vs {f.new_object.label} (edit {j})"))
    for rule in rules.reverse:
        for i, e in enumerate(edits):
            if e.relation.id != rule.forward:
                continue
            for j in contradicting((e.new_object.id, rule.inverse), e.subject.id, i):
                implied = _fact_text(e.new_object.label, rule.inverse, e.subject.label)
                findings.append(Finding("reverse", (i, j), rule.text,
                                        f"edit {i} implies {implied}; edit {j} sets it to {edits[j].new_object.label}"))
    known_links = [(f.subject, f.relation.id, f.object, None) for f in facts]
    known_links += [(e.subject, e.relation.id, e.new_object, i) for i, e in enumerate(edits)]
    for rule in rules.composite:
        for i, e in enumerate(edits):
            if e.relation.id != rule.second:
                continue
            for s, relation, m, via in known_links:
                if relation != rule.first or m.id != e.subject.id:
                    continue
                for j in contradicting((s.id, rule.implied), e.new_object.id, i):
                    if j == via:
                        continue
                    implied = _fact_text(s.label, rule.implied, e.new_object.label)
                    source = f"edit {via}" if via is not None else "a fact"
                    findings.append(Finding("composite", tuple(x for x in (via, i, j) if x is not None), rule.text,
                                            f"{source} {_fact_text(s.label, rule.first, m.label)} and edit {i} imply {implied}; "
                                            f"edit {j} sets it to {edits[j].new_object.label}"))
    findings += _stale(edits, rules, facts, sets)
    return findings


def _stale(edits: Sequence[Edit], rules: Rules, facts: list[Fact], sets: dict[Key, list[int]]) -> list[Finding]:
    """Facts of the graph derived (by a rule) from a fact an edit changes, and left as they are by the batch."""
    have = {(f.subject.id, f.relation.id, f.object.id): f for f in facts}
    found = []
    for i, e in enumerate(edits):
        for rule in rules.reverse:
            if e.relation.id == rule.forward and (e.object.id, rule.inverse, e.subject.id) in have \
                    and (e.object.id, rule.inverse) not in sets:
                found.append(Finding("stale", (i,), rule.text, f"{_fact_text(e.object.label, rule.inverse, e.subject.label)} "
                                     f"follows from {_fact_text(e.subject.label, e.relation.id, e.object.label)}, which edit {i} changes"))
        for rule in rules.composite:
            if e.relation.id != rule.second:
                continue
            for (s, relation, m), fact in have.items():
                if relation == rule.first and m == e.subject.id and (s, rule.implied, e.object.id) in have \
                        and (s, rule.implied) not in sets:
                    found.append(Finding("stale", (i,), rule.text,
                                         f"{_fact_text(fact.subject.label, rule.implied, e.object.label)} follows from "
                                         f"{_fact_text(e.subject.label, e.relation.id, e.object.label)}, which edit {i} changes"))
    return found


# --------------------------------------------------------------------------- reading inputs


def read_rules(path: Path) -> Rules:
    if path.is_dir():
        from pitfalls_generator.from_published import read_published

        return read_published(path)[2]
    try:
        data = loads(path.read_bytes(), f"--rules {path}")
    except FileNotFoundError:
        raise DatasetError(f"--rules {path}: no such file or folder") from None
    except OSError as exc:
        raise DatasetError(f"--rules {path}: cannot read it ({exc.strerror or exc})") from None
    except JsonInputError as exc:
        raise DatasetError(f"{exc}; give a JSON rules file") from None
    if not isinstance(data, dict):
        raise DatasetError(f"--rules {path}: expected a JSON object of rule lists")
    return parse_rules(data, str(path))


def read_batches(path: Path) -> list[tuple[str, list[Edit], list[Fact]]]:
    """``[(batch name, edits, facts)]``: one batch for a JSON-lines file, one per case for a case file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder; give a JSON-lines file of edit requests or a published case file") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason})") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        from pitfalls_benchmark.datasets import parse_conflict_file, parse_round_file
        from pitfalls_benchmark.splits import SPLITS

        split = next((name for name, s in SPLITS.items() if s.file == path.name), None)
        if split is None:
            raise DatasetError(f"{path}: a case file must keep its published name ({', '.join(s.file for s in SPLITS.values())})")
        cases = parse_conflict_file(path, split) if SPLITS[split].benchmark == "conflict" else parse_round_file(path, split)
        return [case_batch(case) for case in cases]
    edits = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                raw = loads(line, f"{path}: line {number}")
            except JsonInputError as exc:
                raise DatasetError(str(exc)) from None
            edits.append(parse_edit(raw, f"{path}: line {number}"))
    if not edits:
        raise DatasetError(f"{path}: holds no edit requests")
    return [(path.name, edits, [])]


def case_batch(case: ConflictCase | RoundCase) -> tuple[str, list[Edit], list[Fact]]:
    """A case's edits as one batch: a ConflictEdit case's two edits with its triples as facts; for a RoundEdit case
    its Multi-Label Edit step (the new object back to every true object at once: several objects of a 1-to-N fact)."""
    if isinstance(case, RoundCase):
        e = case.edit
        return case.case_id, [Edit(e.subject, e.relation, e.new_object, o) for o in case.true_objects], []
    return case.case_id, list(case.edits), list(case.triples)


def read_facts(path: Path) -> list[Fact]:
    """The graph's triples as facts (relations by id only: no prompt is needed to compare facts)."""
    graph = read_triples_file(path)
    return [Fact(graph.entities[t.subject], Relation(t.relation, "{}", "", ""), graph.entities[t.object]) for t in graph.triples]


def check(batches: list[tuple[str, list[Edit], list[Fact]]], rules: Rules, extra_facts: list[Fact]) -> list[Finding]:
    findings = []
    for name, edits, facts in batches:
        for finding in find_conflicts(edits, rules, [*facts, *extra_facts]):
            findings.append(Finding(finding.kind, finding.edits, finding.rule, finding.why, name))
    return findings


def format_table(findings: list[Finding], batches: int) -> str:
    conflicts = [f for f in findings if f.conflict]
    stale = [f for f in findings if not f.conflict]
    lines = []
    if findings:
        width = max(len(f.batch) for f in findings)
        lines += [f"{f.kind:<9} {f.batch:<{width}}  edits {','.join(map(str, f.edits)):<7} {f.rule:<14} {f.why}" for f in findings]
        lines.append("")
    with_conflict = len({f.batch for f in conflicts})
    lines.append(f"{len(conflicts)} conflict(s) in {with_conflict} of {batches} batch(es); {len(stale)} stale fact(s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pitfalls_generator.precheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("edits", help="JSON lines of edit requests, or a published case file")
    parser.add_argument("--rules", required=True, help="rules file, or a folder of published-format files")
    parser.add_argument("--facts", help="the graph's triples (JSON lines or TSV, as the generator reads)")
    parser.add_argument("--json", dest="json_out", help="also write the findings as JSON to this file ('-': standard output)")
    args = parser.parse_args(argv)
    if args.json_out not in (None, "-"):
        out = Path(args.json_out)
        if out.is_dir() or not out.parent.is_dir() or not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
            print(f"error: --json {args.json_out}: cannot write a file there; give a writable file path or '-'", file=sys.stderr)
            return 2
    try:
        rules = read_rules(Path(args.rules))
        batches = read_batches(Path(args.edits))
        facts = read_facts(Path(args.facts)) if args.facts else []
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    findings = check(batches, rules, facts)
    if args.json_out != "-":
        print(format_table(findings, len(batches)))
    if args.json_out:
        payload = json.dumps({"batches": len(batches), "findings": [asdict(f) | {"conflict": f.conflict} for f in findings]},
                             ensure_ascii=False, indent=1)
        if args.json_out == "-":
            print(payload)
        else:
            try:
                Path(args.json_out).write_text(payload, encoding="utf-8")
            except OSError as exc:
                print(f"error: --json {args.json_out}: cannot write it ({exc.strerror or exc})", file=sys.stderr)
                return 2
    return 1 if any(f.conflict for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
