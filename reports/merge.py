"""``python -m reports merge OUT SHARD_DIR [SHARD_DIR ...]``: one run folder from the run folders of ``--shard K/N`` runs.

Refuses shards whose configurations differ (model and its weights, editor,
hyper-parameters, dataset, seed ... everything but the shard) or whose N
differ; says which shards and which cases are missing; keeps one record per
case id (the last one written, in the order the folders are given); then
writes ``cases.jsonl``, ``run.json``, ``selection.json``, ``summary.json``
and ``report.html`` into ``OUT``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.records import (
    CASES_FILE,
    SELECTION_FILE,
    CaseLog,
    latest_per_case,
    read_cases,
    read_run_config,
    write_run_config,
    write_summary,
)

# Run facts that may differ between shards of one run.
PER_SHARD = ("shard", "git_commit", "versions", "device")


class MergeError(ValueError):
    """Shards that cannot be merged; the message names them."""


@dataclass
class Merged:
    out: Path
    cases: int
    total_shards: int
    missing_shards: list[int] = field(default_factory=list)
    missing_cases: list[str] = field(default_factory=list)


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """What must be equal across the shards of one run."""
    requested = {k: v for k, v in (config.get("requested") or {}).items() if k not in PER_SHARD}
    return {**{k: v for k, v in config.items() if k not in (*PER_SHARD, "requested")}, "requested": requested}


def merge_runs(out: Path, shards: list[Path]) -> Merged:
    configs = []
    for folder in shards:
        if not (folder / CASES_FILE).is_file():
            raise MergeError(f"{folder}: no {CASES_FILE} (not a run folder of the harness)")
        configs.append(read_run_config(folder))
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
    parts = [tuple(map(int, spec.split("/"))) for spec in specs]
    if len({n for _, n in parts}) != 1:
        raise MergeError(f"the shards split the cases in different numbers of parts: {', '.join(sorted(set(specs)))}")
    total = parts[0][1]
    missing_shards = sorted(set(range(1, total + 1)) - {k for k, _ in parts})

    records = latest_per_case([r for folder in shards for r in read_cases(folder / CASES_FILE)])
    selected: list[str] = []
    expected: dict[str, int] = {}
    for folder in shards:
        path = folder / SELECTION_FILE
        selection = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        selected += [c for c in selection.get("cases", []) if c not in selected]
        for split, n in selection.get("expected", {}).items():
            expected[split] = expected.get(split, 0) + n
    done = {r.case_id for r in records}
    out.mkdir(parents=True, exist_ok=True)
    log = CaseLog(out / CASES_FILE)
    for record in records:
        log.write(record)
    log.close()
    merged_config = {**configs[0], "requested": {**(configs[0].get("requested") or {}), "shard": None},
                     "merged_from": [str(f) for f in shards], "shards": specs}
    write_run_config(out, merged_config)
    (out / SELECTION_FILE).write_text(json.dumps({"expected": expected, "cases": selected}), encoding="utf-8")
    write_summary(out, records, merged_config)
    from reports.render import render_report

    render_report([out], out / "report.html")
    return Merged(out, len(records), total, missing_shards, [c for c in selected if c not in done])


def main(argv: list[str]) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m reports merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the merged run folder to write")
    parser.add_argument("shards", nargs="+", help="run folders of --shard K/N runs")
    args = parser.parse_args(argv)
    try:
        merged = merge_runs(Path(args.out), [Path(s) for s in args.shards])
    except MergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged {merged.cases} cases into {merged.out}")
    if merged.missing_shards:
        print(f"missing shards: {', '.join(f'{k}/{merged.total_shards}' for k in merged.missing_shards)}")
    if merged.missing_cases:
        print(f"{len(merged.missing_cases)} selected cases have no record: {', '.join(merged.missing_cases[:10])}"
              + (" ..." if len(merged.missing_cases) > 10 else ""))
    print(f"report: {(merged.out / 'report.html').resolve()}")
    return 0
