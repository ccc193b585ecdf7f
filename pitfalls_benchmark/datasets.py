"""Load the published ConflictEdit / RoundEdit format into typed cases.

One loader reads the paper's files and the ones our generator writes. Every
problem in a file is reported as one :class:`DatasetError` line naming the
file and the record, so a user with a broken copy knows where to look.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pitfalls_benchmark.splits import BENCHMARKS, CONFLICT_SPLITS, ROUND_SPLITS, SPLIT_ORDER, SPLITS
from pitfalls_editkit.facts import Edit, Entity, ExampleEdit, Fact, Relation, TemplateError, check_template, fill
from pitfalls_editkit.safe_json import JsonInputError, loads

MAX_LABEL_CHARS = 500  # the longest published label has 191 characters
LINE_BREAK_TAB_OR_NUL = re.compile("[\n\r\t\x00]")  # not allowed in a label


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names file and record."""


@dataclass(frozen=True)
class ConflictCase:
    split: str  # coverage | reverse | composite
    index: int
    rule: str | None  # e.g. "P800>P170", "P25&P26>P22"; None for coverage
    triples: tuple[Fact, ...]
    prerequisites: tuple[int, ...]
    edits: tuple[Edit, Edit]
    source: str = ""

    @property
    def benchmark(self) -> str:
        return "conflict"

    @property
    def group(self) -> str:
        """The rule (reverse, composite) or the edited relation (coverage): the report's breakdown."""
        return self.rule or self.edits[0].relation.id

    @property
    def case_id(self) -> str:
        tag = rule_slug(self.rule) if self.rule else self.edits[0].relation.id
        return f"{self.split}-{self.index:04d}-{tag}-{slugify(self.edits[0].subject.label)}"


@dataclass(frozen=True)
class RoundCase:
    split: str  # easy | hard
    index: int
    type: str  # "1-N@Pxx" as published
    edit: Edit
    true_objects: tuple[Entity, ...]  # de-duplicated by label, edit.object included
    duplicate_labels: tuple[str, ...] = field(default=())
    source: str = ""

    @property
    def benchmark(self) -> str:
        return "round"

    @property
    def group(self) -> str:
        """The edited relation: the report's breakdown."""
        return self.edit.relation.id

    @property
    def case_id(self) -> str:
        return f"{self.split}-{self.index:04d}-{self.edit.relation.id}-{slugify(self.edit.subject.label)}"

    @property
    def other_objects(self) -> tuple[Entity, ...]:
        return tuple(e for e in self.true_objects if e.label != self.edit.object.label)


Case = ConflictCase | RoundCase


def slugify(text: str, max_len: int = 40) -> str:
    """ASCII slug usable in a pytest ``-k`` expression."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_text).strip("-").lower()
    return slug[:max_len].rstrip("-") or "x"


def rule_slug(rule: str) -> str:
    """``P25&P26>P22`` -> ``P25+P26-P22`` (``&``/``>`` are not allowed in ``-k``)."""
    return rule.replace("&", "+").replace(">", "-")


# --------------------------------------------------------------------------- parsing


def _read_json(path: Path) -> Any:
    try:
        return loads(path.read_bytes(), str(path))  # bounded: depth, integer digits, string length
    except JsonInputError as exc:
        raise DatasetError(str(exc)) from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it ({exc.strerror or exc})") from None


class _Record:
    """Typed access to one record, with errors that say where."""

    def __init__(self, path: Path, index: int, data: Any) -> None:
        self.where = f"{path}: record {index}"
        if not isinstance(data, dict):
            raise DatasetError(f"{self.where}: expected an object, got {type(data).__name__}")
        self.data = data

    def get(self, obj: dict, key: str, kind: type | tuple[type, ...], at: str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise DatasetError(f"{self.where}: missing '{at}{key}'")
        value = obj[key]
        if not isinstance(value, kind):
            raise DatasetError(f"{self.where}: '{at}{key}' should be {_kind_name(kind)}, got {type(value).__name__}")
        return value

    def entity(self, obj: dict, key: str, at: str) -> Entity:
        raw = self.get(obj, key, dict, at)
        label = self.get(raw, "label", str, f"{at}{key}.")
        if not label.strip():
            raise DatasetError(f"{self.where}: '{at}{key}.label' is empty; every subject and object needs its name")
        if len(label) > MAX_LABEL_CHARS:
            raise DatasetError(f"{self.where}: '{at}{key}.label' is {len(label)} characters long (at most {MAX_LABEL_CHARS}); "
                               "a label is an entity's name, not a text")
        if LINE_BREAK_TAB_OR_NUL.search(label):
            raise DatasetError(f"{self.where}: '{at}{key}.label' {label[:40]!r} holds a line break, tab or NUL; "
                               "give the name on one line")
        return Entity(id=str(self.get(raw, "id", (str, int), f"{at}{key}.")), label=label)

    def relation(self, obj: dict, at: str) -> Relation:
        raw = self.get(obj, "relation", dict, at)
        here = f"{at}relation."
        prompt = self.get(raw, "prompt", str, here)
        try:
            check_template(prompt)
        except TemplateError as exc:
            raise DatasetError(f"{self.where}: {here}prompt: {exc}") from None
        return Relation(
            id=self.get(raw, "id", str, here),
            prompt=prompt,
            query=raw.get("query", "") if isinstance(raw.get("query", ""), str) else "",
            label=raw.get("label", "") if isinstance(raw.get("label", ""), str) else "",
        )

    def fact(self, obj: dict, at: str) -> Fact:
        return Fact(self.entity(obj, "subject", at), self.relation(obj, at), self.entity(obj, "object", at))

    def edit(self, obj: dict, at: str) -> Edit:
        fact = self.fact(obj, at)
        return Edit(fact.subject, fact.relation, fact.object, self.entity(obj, "new_object", at))


def parse_edit(raw: Any, where: str) -> Edit:
    """One edit request in the published edit format; ``where`` (file and line) names it in errors."""
    record = _Record(Path(where), 0, raw)
    record.where = where
    return record.edit(raw, "")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _records(path: Path) -> list[Any]:
    data = _read_json(path)
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a list of records, got {type(data).__name__}")
    if not data:
        raise DatasetError(f"{path}: holds no cases (an empty list); add cases or remove the file")
    return data


def parse_conflict_file(path: Path, split: str) -> list[ConflictCase]:
    cases = []
    for index, raw in enumerate(_records(path)):
        rec = _Record(path, index, raw)
        case_type = rec.get(rec.data, "type", str, "")
        if case_type != split:
            raise DatasetError(f"{rec.where}: type {case_type!r} found in the {split} file")
        rule = rec.data.get("rule")
        if split != "coverage" and not isinstance(rule, str):
            raise DatasetError(f"{rec.where}: missing 'rule' (required for {split} cases)")
        triples = tuple(rec.fact(t, f"triples[{i}].") for i, t in enumerate(rec.get(rec.data, "triples", list, "")))
        edits_raw = rec.get(rec.data, "edits", list, "")
        if len(edits_raw) != 2:
            raise DatasetError(f"{rec.where}: 'edits' must hold exactly 2 edits, found {len(edits_raw)}")
        edits = tuple(rec.edit(e, f"edits[{i}].") for i, e in enumerate(edits_raw))
        prerequisites = tuple(rec.data.get("prerequisites") or ())
        if any(not isinstance(p, int) or not 0 <= p < len(triples) for p in prerequisites):
            raise DatasetError(f"{rec.where}: 'prerequisites' {list(prerequisites)} do not index 'triples'")
        if split == "composite" and not prerequisites:
            raise DatasetError(f"{rec.where}: a composite case needs a tied triple in 'prerequisites'")
        cases.append(ConflictCase(split, index, rule if isinstance(rule, str) else None, triples, prerequisites, edits, str(path)))
    return cases


def parse_round_file(path: Path, split: str) -> list[RoundCase]:
    cases = []
    for index, raw in enumerate(_records(path)):
        rec = _Record(path, index, raw)
        edit = rec.edit(rec.get(rec.data, "edit", dict, ""), "edit.")
        true_raw = rec.get(rec.data, "true_objects", list, "")
        entities = [rec.entity({"e": t}, "e", f"true_objects[{i}].") for i, t in enumerate(true_raw)]
        by_label: dict[str, Entity] = {}
        duplicates = []
        for entity in entities:
            if entity.label in by_label:
                duplicates.append(entity.label)
            else:
                by_label[entity.label] = entity
        if edit.object.label not in by_label:
            raise DatasetError(f"{rec.where}: edit.object {edit.object.label!r} is not among 'true_objects'")
        if edit.new_object.label in by_label:
            raise DatasetError(f"{rec.where}: edit.new_object {edit.new_object.label!r} is a true object")
        if len(by_label) < 2:
            raise DatasetError(f"{rec.where}: needs at least 2 distinct true objects, found {len(by_label)}")
        cases.append(
            RoundCase(split, index, str(rec.data.get("type", "")), edit, tuple(by_label.values()), tuple(duplicates), str(path))
        )
    return cases


def load_prompt_file(path: Path) -> dict[str, tuple[str, ...]]:
    """Relation id -> paraphrase templates, each with one ``{}``."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected an object mapping relation ids to prompt lists")
    prompts = {}
    for relation_id, templates in data.items():
        if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
            raise DatasetError(f"{path}: relation {relation_id}: expected a list of prompt strings")
        for template in templates:
            try:
                check_template(template)
            except TemplateError as exc:
                raise DatasetError(f"{path}: relation {relation_id}: {exc}") from None
        prompts[relation_id] = tuple(templates)
    return prompts


# --------------------------------------------------------------------------- dataset folder


@dataclass
class Dataset:
    """A folder in the published format; any subset of the split files."""

    root: Path
    cases: dict[str, list[Case]]
    conflict_prompts: dict[str, tuple[str, ...]]
    round_prompts: dict[str, tuple[str, ...]]

    def prompts_for(self, case: Case) -> dict[str, tuple[str, ...]]:
        return self.conflict_prompts if isinstance(case, ConflictCase) else self.round_prompts

    def all_cases(self) -> list[Case]:
        return [case for split in SPLIT_ORDER for case in self.cases.get(split, [])]

    def entity_labels(self) -> frozenset[str]:
        """Every entity label the cases name (subjects, old and new objects, other true objects, the facts a conflict
        case rests on), casefolded: what a general-ability quiz must not ask about."""
        entities = []
        for case in self.all_cases():
            if isinstance(case, RoundCase):
                edits, facts, extra = (case.edit,), (), case.true_objects
            else:
                edits, facts, extra = case.edits, case.triples, ()
            entities += [e for edit in edits for e in (edit.subject, edit.object, edit.new_object)]
            entities += [e for fact in facts for e in (fact.subject, fact.object)] + list(extra)
        return frozenset(e.label.casefold() for e in entities)


def _relations_of(case: Case) -> list[tuple[Relation, str]]:
    if isinstance(case, RoundCase):
        return [(case.edit.relation, "edit")]
    used = [(t.relation, f"triples[{i}]") for i, t in enumerate(case.triples)]
    return used + [(e.relation, f"edits[{i}]") for i, e in enumerate(case.edits)]


def load_dataset(root: str | Path, splits: tuple[str, ...] | None = None, limit: int | None = None) -> Dataset:
    """Read every split file present under ``root`` (first ``limit`` cases each).

    Raises :class:`DatasetError` naming the file and record for a malformed
    file, a relation missing from the prompt file, or a folder with no case file.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"--dataset-dir {root}: no such folder")
    wanted = splits or SPLIT_ORDER
    present = tuple(s for s in wanted if (root / SPLITS[s].file).is_file())
    if not present:
        names = ", ".join(SPLITS[s].file for s in wanted)
        raise DatasetError(f"--dataset-dir {root}: holds none of the case files ({names})")
    parsed = _parse_dataset(root, present, _content_digest(root, present))
    cases = {split: list(parsed.cases[split][:limit] if limit is not None else parsed.cases[split]) for split in present}
    return Dataset(root, cases, dict(parsed.conflict_prompts), dict(parsed.round_prompts))


def _content_digest(root: Path, splits: tuple[str, ...]) -> str:
    """What the parse of ``splits`` under ``root`` depends on: the bytes of their files and of the prompt files."""
    digest = hashlib.blake2b(digest_size=16)
    names = [SPLITS[split].file for split in splits] + [benchmark.prompts_file for benchmark in BENCHMARKS.values()]
    for name in names:
        try:
            content = (root / name).read_bytes()
        except OSError:
            content = b"\0missing"  # the parse says what is wrong with it
        digest.update(name.encode() + b"\0" + hashlib.blake2b(content, digest_size=16).digest())
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def _parse_dataset(root: Path, present: tuple[str, ...], digest: str) -> Dataset:
    """The parse of a dataset folder, kept for the files' exact bytes (``digest``): a process that runs the suites
    again on the same files (the harness's own tests run hundreds of runs in-process) parses them once, seconds
    each time otherwise. Errors are not kept; callers get copies of its lists and dicts."""

    def prompt_file(name: str) -> dict[str, tuple[str, ...]]:
        path = root / name
        if not path.is_file():
            raise DatasetError(f"{path}: missing (needed by the case files in {root})")
        return load_prompt_file(path)

    conflict_prompts = prompt_file(BENCHMARKS["conflict"].prompts_file) if any(s in CONFLICT_SPLITS for s in present) else {}
    round_prompts = prompt_file(BENCHMARKS["round"].prompts_file) if any(s in ROUND_SPLITS for s in present) else {}
    cases: dict[str, list[Case]] = {}
    for split in present:
        path = root / SPLITS[split].file
        parsed: list[Case] = list(
            parse_conflict_file(path, split) if split in CONFLICT_SPLITS else parse_round_file(path, split)
        )
        prompts = conflict_prompts if split in CONFLICT_SPLITS else round_prompts
        prompts_name = BENCHMARKS[SPLITS[split].benchmark].prompts_file
        for case in parsed:
            for relation, at in _relations_of(case):
                if relation.id not in prompts:
                    raise DatasetError(
                        f"{path}: record {case.index}: unknown relation {relation.id} in {at} (not in {root / prompts_name})"
                    )
        cases[split] = parsed
    return Dataset(root, cases, conflict_prompts, round_prompts)


def prompt_set(relation: Relation, subject: str, paraphrases: dict[str, tuple[str, ...]]) -> list[str]:
    """METRICS.md's prompt set: the rewrite prompt plus the relation's paraphrases."""
    return [fill(relation.prompt, subject)] + [fill(t, subject) for t in paraphrases.get(relation.id, ())]


def example_edits(root: str | Path) -> tuple[ExampleEdit, ...]:
    """Each case's first edit, of every split of the dataset at ``root`` (no limit: the same whatever a run selects),
    with its relation's paraphrases: the examples editors that learn from them draw from (IKE's demonstrations)."""
    dataset = load_dataset(root)
    found: dict[tuple[str, str, str, str], ExampleEdit] = {}
    for case in dataset.all_cases():
        edit = case.edit if isinstance(case, RoundCase) else case.edits[0]
        key = (edit.subject.label, edit.relation.id, edit.object.label, edit.new_object.label)
        found.setdefault(key, ExampleEdit(edit, dataset.prompts_for(case).get(edit.relation.id, ())))
    return tuple(found.values())
