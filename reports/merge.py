"""``python -m reports merge OUT SHARD_DIR [SHARD_DIR ...]``: one run folder from the run folders of ``--shard K/N`` runs.

Refuses shards whose configurations differ (model and its weights, editor,
hyper-parameters, dataset, seed ... everything but the shard) or whose N
differ, and two folders whose finished records of one case differ; says which
shards and which cases are missing; keeps one record per case id (the last
one written in its folder; a finished record over an error); then writes
``cases.jsonl``, ``run.json``, ``selection.json``, ``summary.json`` and
``report.html`` into ``OUT``. ``OUT`` may not be, hold or lie inside a shard
folder, and may not hold a run already unless ``--replace`` is given; the
merge is written into a temporary folder beside ``OUT`` and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.records import CASES_FILE, RUN_FILE, SELECTION_FILE, CaseLog, CaseRecord, write_run_config, write_summary
from harness.run_files import RunFileError, read_cases, read_run_config, read_selection
from pitfalls_editkit.folders import overlaps

# Run facts that may differ between shards of one run.
PER_SHARD = ("shard", "git_commit", "versions", "device")
# Record fields that may differ between two runs of one case: where and how fast it ran.
PER_SESSION = ("seconds_edit", "seconds_eval", "worker", "device", "threads")


class MergeError(ValueError):
    """Shards that cannot be merged; the message names them."""


@dataclass
class Merged:
    out: Path
    cases: int
    total_shards: int
    missing_shards: list[int] = field(default_factory=list)
    missing_cases: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # lines of the shards' cases.jsonl left out


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """What must be equal across the shards of one run."""
    requested = {k: v for k, v in (config.get("requested") or {}).items() if k not in PER_SHARD}
    return {**{k: v for k, v in config.items() if k not in (*PER_SHARD, "requested")}, "requested": requested}


def check_output(out: Path, shards: list[Path], replace: bool) -> None:
    """Refuse an output that is, holds or lies inside a shard folder, or that holds a run (unless ``replace``)."""
    for folder in shards:
        if overlaps(out, folder):
            raise MergeError(f"{out}: is, holds or lies inside the shard folder {folder}; merge into a new folder")
    if out.exists() and not out.is_dir():
        raise MergeError(f"{out}: exists and is not a folder; merge into a new folder")
    if out.is_dir() and any((out / name).exists() for name in (CASES_FILE, RUN_FILE)):
        if not replace:
            raise MergeError(f"{out}: holds a run already; merge into a new folder, or give --replace to replace it")
    elif out.is_dir() and any(out.iterdir()):
        raise MergeError(f"{out}: a folder that holds other files; merge into a new or empty folder")


def _one_record_per_case(shards: list[Path], per_folder: list[list[CaseRecord]]) -> list[CaseRecord]:
    """The latest record per case within each folder; across folders equal finished records, or a finished record
    over an error; two finished records that differ are refused."""
    chosen: dict[str, tuple[Path, CaseRecord]] = {}
    for folder, records in zip(shards, per_folder):
        for record in records:
            if record.case_id not in chosen or not chosen[record.case_id][1].ok:
                chosen[record.case_id] = (folder, record)
                continue
            first_folder, first = chosen[record.case_id]
            if not record.ok:
                continue
            found, found_first = _what_it_found(record), _what_it_found(first)
            if found != found_first:
                differs = next(k for k in found_first if found_first[k] != found[k])
                raise MergeError(f"case {record.case_id}: {first_folder} and {folder} hold finished records that differ "
                                 f"({differs}); merge only shards of one run")
    return [record for _, record in chosen.values()]


def _what_it_found(record: CaseRecord) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in asdict(record).items() if k not in PER_SESSION}, allow_nan=True))


def merge_runs(out: Path, shards: list[Path], replace: bool = False) -> Merged:
    """Merge; a MergeError names the shard, file or case that stops it, and ``out`` is left as it was."""
    for folder in shards:
        if not (folder / CASES_FILE).exists():
            raise MergeError(f"{folder}: no {CASES_FILE} (not a run folder of the harness)")
    check_output(out, shards, replace)
    configs, per_folder, notices = [], [], []
    selections = []
    try:
        for folder in shards:
            configs.append(read_run_config(folder))
            lines = read_cases(folder / CASES_FILE)
            per_folder.append(lines.latest())
            notices += [lines.notice()] if lines.notice() else []
            selections.append(read_selection(folder))
    except RunFileError as exc:
        raise MergeError(str(exc)) from None
    first = comparable(configs[0])
    for folder, config in zip(shards[1:], configs[1:]):
        other = comparable(config)
        if other != first:
            key = next(k for k in sorted(set(first) | set(other)) if first.get(k) != other.get(k))
            raise MergeError(f"{folder}: {key} differs from {shards[0]} ({other.get(key)!r} vs {first.get(key)!r}); "
                             "merge only shards of one run")
    specs = [(c.get("requested") or {}).get("shard") for c in configs]
    if any(spec is None for spec in specs):
        raise MergeError(f"{shards[specs.index(None)]}: not a shard (run with --shard K/N)")
    try:
        parts = [tuple(map(int, str(spec).split("/"))) for spec in specs]
    except ValueError:
        raise MergeError(f"{shards[0]}: run.json names shards {', '.join(map(str, specs))}, not K/N") from None
    if len({n for _, n in parts}) != 1:
        raise MergeError(f"the shards split the cases in different numbers of parts: {', '.join(sorted(set(specs)))}")
    total = parts[0][1]
    missing_shards = sorted(set(range(1, total + 1)) - {k for k, _ in parts})

    records = _one_record_per_case(shards, per_folder)
    selected: list[str] = []
    expected: dict[str, int] = {}
    seen_selections: set[str] = set()
    for selection in selections:
        if selection is None or json.dumps(asdict(selection)) in seen_selections:  # a shard given twice counts once
            continue
        seen_selections.add(json.dumps(asdict(selection)))
        selected += [c for c in selection.cases if c not in selected]
        for split, n in selection.expected.items():
            expected[split] = expected.get(split, 0) + n
    done = {r.case_id for r in records}
    merged_config = {**configs[0], "requested": {**(configs[0].get("requested") or {}), "shard": None},
                     "merged_from": [str(f) for f in shards], "shards": specs}
    _write_into_place(out, records, merged_config, {"expected": expected, "cases": selected})
    return Merged(out, len(records), total, missing_shards, [c for c in selected if c not in done], notices)


def _write_into_place(out: Path, records: list[CaseRecord], config: dict[str, Any], selection: dict[str, Any]) -> None:
    """Write the merged folder beside ``out``, then rename it into place (a run it replaces goes only then)."""
    from reports.render import render_report

    temporary = out.parent / f".{out.name}.merging-{os.getpid()}"
    old = out.parent / f".{out.name}.replaced-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        log = CaseLog(temporary / CASES_FILE)
        for record in records:
            log.write(record)
        log.close()
        write_run_config(temporary, config)
        (temporary / SELECTION_FILE).write_text(json.dumps(selection), encoding="utf-8")
        write_summary(temporary, records, config)
        render_report([temporary], temporary / "report.html")
        if out.exists():
            out.rename(old)
        temporary.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        if old.exists() and not out.exists():
            old.rename(out)
        raise MergeError(f"{out}: cannot write the merged run ({exc.strerror or exc}); choose a writable folder with room") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def main(argv: list[str]) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m reports merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the merged run folder to write")
    parser.add_argument("shards", nargs="+", help="run folders of --shard K/N runs")
    parser.add_argument("--replace", action="store_true", help="replace the run OUT holds (refused without it)")
    args = parser.parse_args(argv)
    try:
        merged = merge_runs(Path(args.out), [Path(s) for s in args.shards], args.replace)
    except MergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for notice in merged.notices:
        print(f"note: {notice}", file=sys.stderr)
    print(f"merged {merged.cases} cases into {merged.out}")
    if merged.missing_shards:
        print(f"missing shards: {', '.join(f'{k}/{merged.total_shards}' for k in merged.missing_shards)}")
    if merged.missing_cases:
        print(f"{len(merged.missing_cases)} selected cases have no record: {', '.join(merged.missing_cases[:10])}"
              + (" ..." if len(merged.missing_cases) > 10 else ""))
    print(f"report: {(merged.out / 'report.html').resolve()}")
    return 0
