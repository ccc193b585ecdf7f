"""Relations (prompts) and logical rules: the data that turns a graph into cases.

Relations file (JSON): ``{relation_id: {"label", "prompt", "query", "paraphrases": [10 templates]}}``,
every template with one ``{}`` where the subject goes and the object following the text.

Rules file (JSON), in the published rule notation::

    {"coverage":  ["P36", ...],          # functional relations edited twice
     "reverse":   ["P36>P1376", ...],    # (s, A, o) implies (o, B, s)
     "composite": ["P17&P30>P30", ...],  # (s, A, m) and (m, B, o) imply (s, C, o)
     "round":     ["P47", ...]}          # 1-to-N relations for round trips
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pitfalls_benchmark.datasets import DatasetError
from pitfalls_editkit.facts import Relation
from pitfalls_editkit.safe_json import JsonInputError, loads

RULE_KINDS = ("coverage", "reverse", "composite", "round")
_REVERSE = re.compile(r"^([^&>]+)>([^&>]+)$")
_COMPOSITE = re.compile(r"^([^&>]+)&([^&>]+)>([^&>]+)$")


@dataclass(frozen=True)
class RelationSpec:
    relation: Relation
    paraphrases: tuple[str, ...]


@dataclass(frozen=True)
class ReverseRule:
    forward: str
    inverse: str

    @property
    def text(self) -> str:
        return f"{self.forward}>{self.inverse}"


@dataclass(frozen=True)
class CompositeRule:
    first: str  # (s, first, m)
    second: str  # (m, second, o)
    implied: str  # (s, implied, o)

    @property
    def text(self) -> str:
        return f"{self.first}&{self.second}>{self.implied}"


@dataclass(frozen=True)
class Rules:
    coverage: tuple[str, ...] = ()
    reverse: tuple[ReverseRule, ...] = ()
    composite: tuple[CompositeRule, ...] = ()
    round: tuple[str, ...] = ()

    def relation_ids(self) -> set[str]:
        ids = set(self.coverage) | set(self.round)
        ids |= {r for rule in self.reverse for r in (rule.forward, rule.inverse)}
        ids |= {r for rule in self.composite for r in (rule.first, rule.second, rule.implied)}
        return ids


def _read(path: Path, what: str) -> dict:
    try:
        data = loads(Path(path).read_bytes(), str(path))
    except FileNotFoundError:
        raise DatasetError(f"{what} {path}: no such file") from None
    except JsonInputError as exc:
        raise DatasetError(f"{exc}; save it as UTF-8 JSON" if "UTF-8" in str(exc) else str(exc)) from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise DatasetError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return data


def load_relations(path: str | Path) -> dict[str, RelationSpec]:
    specs = {}
    for rid, raw in _read(Path(path), "--relations").items():
        where = f"{path}: relation {rid}"
        if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) for k in ("label", "prompt", "query")):
            raise DatasetError(f"{where}: needs string fields label, prompt and query")
        paraphrases = raw.get("paraphrases", [])
        if not isinstance(paraphrases, list) or not all(isinstance(p, str) for p in paraphrases):
            raise DatasetError(f"{where}: 'paraphrases' must be a list of strings")
        for template in [raw["prompt"], raw["query"], *paraphrases]:
            if template.count("{}") != 1:
                raise DatasetError(f"{where}: template {template!r} must contain '{{}}' exactly once")
        specs[rid] = RelationSpec(Relation(rid, raw["prompt"], raw["query"], raw["label"]), tuple(paraphrases))
    return specs


def parse_rules(data: dict, where: str) -> Rules:
    unknown = set(data) - set(RULE_KINDS)
    if unknown:
        raise DatasetError(f"{where}: unknown rule kind(s) {sorted(unknown)}; expected {', '.join(RULE_KINDS)}")
    lists = {}
    for kind in RULE_KINDS:
        items = data.get(kind, [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise DatasetError(f"{where}: '{kind}' must be a list of strings")
        lists[kind] = items

    def match(pattern: re.Pattern, text: str, kind: str) -> tuple[str, ...]:
        found = pattern.match(text)
        if not found:
            raise DatasetError(f"{where}: {kind} rule {text!r} is not in the form " + ("A>B" if kind == "reverse" else "A&B>C"))
        return found.groups()

    return Rules(
        coverage=tuple(lists["coverage"]),
        reverse=tuple(ReverseRule(*match(_REVERSE, t, "reverse")) for t in lists["reverse"]),
        composite=tuple(CompositeRule(*match(_COMPOSITE, t, "composite")) for t in lists["composite"]),
        round=tuple(lists["round"]),
    )


def load_rules(path: str | Path, relations: dict[str, RelationSpec]) -> Rules:
    rules = parse_rules(_read(Path(path), "--rules"), str(path))
    check_rules(rules, relations, str(path))
    return rules


def check_rules(rules: Rules, relations: dict[str, RelationSpec], where: str) -> None:
    missing = sorted(rules.relation_ids() - set(relations))
    if missing:
        raise DatasetError(f"{where}: rules use relation(s) {', '.join(missing)} that have no prompts in the relations file")
