"""Reading a run folder back: every file the harness writes, checked, every fault one line naming file and line.

Resume, merge, ``reports table`` and the report all read through here. A
file that cannot be used raises :class:`RunFileError` ("<file>: <what is
wrong>; <what to do>"). ``cases.jsonl`` is read line by line: a line that is not
a valid record (torn by a crash, edited by hand, NaN where a metric must be a
number) is left out and said, so its case counts as not finished and a
``--resume`` runs it again.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.records import CASES_FILE, RUN_FILE, SELECTION_FILE, SUMMARY_FILE, CaseRecord
from pitfalls_benchmark.splits import SPLITS
from pitfalls_editkit.safe_json import MAX_STRING, JsonInputError, is_finite_number, is_number, loads

MAX_LINE = 4 * MAX_STRING  # characters in one line of cases.jsonl
MAX_JSON_FILE = 256 * 2**20  # bytes of run.json, summary.json, selection.json
STATUSES = ("ok", "error")


class RunFileError(ValueError):
    """A run-folder file that cannot be used; the message names it and says what to do."""


def _present(path: Path) -> bool:
    """The file is there to be read (a dangling link too: reading it says so)."""
    return path.exists() or path.is_symlink()


def _read_text(path: Path, what_to_do: str, limit: int | None = None) -> str:
    """The file's text, or one line: not a regular file, unreadable, too large, not UTF-8."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            raise RunFileError(f"{path}: not a regular file; {what_to_do}")
        if limit is not None and status.st_size > limit:
            raise RunFileError(f"{path}: {status.st_size} bytes, more than a run file holds ({limit}); {what_to_do}")
        data = path.read_bytes()
    except OSError as exc:
        raise RunFileError(f"{path}: cannot read it ({exc.strerror or exc}); {what_to_do}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path}: not UTF-8 text (byte {exc.start}); {what_to_do}") from None


def _read_object(path: Path, what_to_do: str) -> dict[str, Any]:
    text = _read_text(path, what_to_do, MAX_JSON_FILE)
    try:
        data = loads(text, str(path))
    except JsonInputError as exc:
        raise RunFileError(f"{exc}; {what_to_do}") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{path}: holds a JSON {type(data).__name__}, not an object; {what_to_do}")
    return data


def _expect(path: Path, data: dict[str, Any], key: str, kinds: tuple[type, ...], what_to_do: str) -> None:
    value = data.get(key)
    if key in data and value is not None and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise RunFileError(f"{path}: key {key!r} holds {type(value).__name__} {str(value)[:40]!r}, expected {names}; "
                           f"{what_to_do}")


# --------------------------------------------------------------------------- run.json

RUN_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "editor": (str,), "model_fingerprint": (str,), "seed": (int,), "mle": (bool,), "limit": (int,),
    "requested": (dict,), "hparams": (dict,), "versions": (dict,), "paper_setting": (bool,),
    "paper_setting_differs": (list,), "shards": (list,), "merged_from": (list,),
}


def read_run_config(folder: Path) -> dict[str, Any]:
    """``run.json``, checked; ``{}`` when the folder has none. Runs written before ``run.json`` existed kept the
    configuration in every line (``config``): the first such line is used."""
    path = folder / RUN_FILE
    todo = "restore it from a copy, or write this run into another --run-name / output folder"
    if _present(path):
        config = _read_object(path, todo)
        for key, kinds in RUN_JSON_TYPES.items():
            _expect(path, config, key, kinds, todo)
        return config
    for record in _raw_lines(folder / CASES_FILE):
        config = record.get("config") if isinstance(record, dict) else None
        if isinstance(config, dict) and config:
            return config
    return {}


def _raw_lines(path: Path) -> Iterator[Any]:
    """The parsable JSON lines of an older run's ``cases.jsonl``, in order (read until its configuration is found)."""
    if not path.is_file():
        return
    for number, line in enumerate(_read_text(path, "restore it or choose another run folder").splitlines(), 1):
        try:
            yield loads(line, f"{path} line {number}")
        except JsonInputError:
            continue


# --------------------------------------------------------------------------- cases.jsonl

_KINDS_OF_ANNOTATION = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float), "int | None": (int, type(None)),
                        "bool | None": (bool, type(None)),
                        "dict[str, Any]": (dict,), "dict[str, float]": (dict,), "list[str]": (list,)}
# CaseRecord's fields -> the JSON types each may hold (None where the annotation allows it).
FIELD_KINDS: dict[str, tuple[type, ...]] = {f.name: _KINDS_OF_ANNOTATION[str(f.type)] for f in fields(CaseRecord)}


def case_problem(data: Any) -> str | None:
    """Why a parsed line is not a record of a case (None when it is one). A record with status "ok" must carry
    every metric of its split as a finite number; a record with status "error" is a valid, unfinished case."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not a record"
    for name in ("case_id", "benchmark", "split", "index", "group"):
        if name not in data:
            return f"no {name!r}"
    for name, value in data.items():
        allowed = FIELD_KINDS.get(name)
        if allowed is None:
            continue
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            return f"{name!r} holds {type(value).__name__} {str(value)[:40]!r}"
    if not data["case_id"]:
        return "an empty case_id"
    split = SPLITS.get(data["split"])
    if split is None:
        return f"split {data['split'][:40]!r} is not one of {', '.join(SPLITS)}"
    if data["benchmark"] != split.benchmark:
        return f"benchmark {data['benchmark'][:40]!r} is not the benchmark of split {split.name!r} ({split.benchmark})"
    if data["index"] < 0:
        return f"index {data['index']} is negative"
    status = data.get("status", "ok")
    if status not in STATUSES:
        return f"status {status[:40]!r} is not one of {', '.join(STATUSES)}"
    for name in ("seconds_edit", "seconds_eval"):
        if name in data and not (is_finite_number(data[name]) and data[name] >= 0):
            return f"{name} {data[name]!r} is not a finite number of seconds"
    if not all(isinstance(text, str) for key in ("edits", "notes", "generated") for text in data.get(key, [])):
        return "edits, notes or generated hold something other than text"
    for key in ("metrics", "original_metrics", "retention", "generation_metrics", "general_ability"):
        for name, value in data.get(key, {}).items():
            if not is_number(value):
                return f"{key}.{name} holds {type(value).__name__} {str(value)[:40]!r}, not a number"
    if status == "ok":
        metrics = data.get("metrics", {})
        for name in split.metrics:
            if name not in metrics and data.get("chain") and name in split.not_on_chain:
                continue  # a chain does not measure it
            if name not in metrics:
                return f"status ok without metric {name}"
            if not is_finite_number(metrics[name]):
                return f"metrics.{name} is {metrics[name]!r}, not a finite number"
    return None


@dataclass
class CaseLines:
    """What ``cases.jsonl`` holds: its valid records in the order written, and the lines left out with why."""

    path: Path
    records: list[CaseRecord] = field(default_factory=list)
    left_out: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)

    def latest(self) -> list[CaseRecord]:
        """One record per case id, the last written (a resumed or repeated run appends)."""
        return list({r.case_id: r for r in self.records}.values())

    def notice(self) -> str | None:
        """One line about the lines left out (None when there are none)."""
        if not self.left_out:
            return None
        shown = "; ".join(f"line {n}: {why}" for n, why in self.left_out[:3])
        more = f" and {len(self.left_out) - 3} more" if len(self.left_out) > 3 else ""
        return (f"{self.path}: {len(self.left_out)} line(s) are not finished records and were left out ({shown}{more}); "
                "their cases count as not finished (--resume runs them again)")


def read_cases(path: Path) -> CaseLines:
    """Every line of ``cases.jsonl`` checked (a missing file holds no record)."""
    lines = CaseLines(path)
    if not _present(path):
        return lines
    text = _read_text(path, "restore it from a copy, or choose another run folder")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE:
            lines.left_out.append((number, f"{len(line)} characters, more than a record holds"))
            continue
        try:
            data = loads(line, f"line {number}")
        except JsonInputError as exc:
            lines.left_out.append((number, str(exc).split(": ", 1)[-1]))
            continue
        problem = case_problem(data)
        if problem:
            lines.left_out.append((number, problem))
            continue
        lines.records.append(CaseRecord.from_dict(data))
    return lines


# --------------------------------------------------------------------------- selection.json, summary.json


@dataclass
class Selection:
    """``selection.json``: how many cases of each split were selected, and which."""

    expected: dict[str, int] = field(default_factory=dict)
    cases: list[str] = field(default_factory=list)


def read_selection(folder: Path) -> Selection | None:
    path = folder / SELECTION_FILE
    if not _present(path):
        return None
    todo = "remove it (the report then cannot tell how many cases were selected) or run again with --resume"
    data = _read_object(path, todo)
    expected, cases = data.get("expected", {}), data.get("cases", [])
    if not isinstance(expected, dict) or not all(s in SPLITS and isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                 for s, n in expected.items()):
        raise RunFileError(f"{path}: 'expected' is not a mapping of split to a count of cases; {todo}")
    if not isinstance(cases, list) or not all(isinstance(c, str) and c for c in cases):
        raise RunFileError(f"{path}: 'cases' is not a list of case ids; {todo}")
    return Selection(expected, cases)


def read_summary(folder: Path) -> dict[str, Any] | None:
    """``summary.json`` (written when a session ends; None before). Only its configuration is used by readers:
    the numbers are computed again from the records."""
    path = folder / SUMMARY_FILE
    if not _present(path):
        return None
    todo = "remove it: it is written again from cases.jsonl when the run is resumed or merged"
    data = _read_object(path, todo)
    _expect(path, data, "config", (dict,), todo)
    _expect(path, data, "splits", (dict,), todo)
    return data


def counted_records(records: list[CaseRecord], selection: Selection | None, folder: Path) -> tuple[list[CaseRecord], str | None]:
    """The records a summary counts: those of the selected cases (all of them when the folder names no selection),
    and one line naming the records left out."""
    if selection is None or not selection.cases:
        return records, None
    chosen = set(selection.cases)
    outside = [r.case_id for r in records if r.case_id not in chosen]
    if not outside:
        return records, None
    shown = ", ".join(outside[:3]) + (" ..." if len(outside) > 3 else "")
    return ([r for r in records if r.case_id in chosen],
            f"{folder / CASES_FILE}: {len(outside)} record(s) of cases outside the run's selection ({shown}) are not counted")
