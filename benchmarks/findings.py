"""The README's findings table: its runs kept in the repository, without the published data's text.

The findings (12 editor variants x 5 splits x 10 published GPT2-XL cases on the default model) take longer
than one working session on a CPU. Their finished records are kept under ``docs/findings/`` so that the next
session goes on where the last one stopped, and so that the table can be recomputed from them:

    python -m benchmarks.findings restore results/findings          # the kept records into a results folder
    python -m reports.compare ... --out results/findings --resume   # run what is missing (README, "Findings")
    python -m benchmarks.findings save results/findings             # keep what is finished
    python -m reports table docs/findings/gemma3-270m-gpt2xl/*      # the table

A kept record holds the case id, split, metrics, numeric scores, pitfall verdict, seed and seconds, and where a run
has them the chain's fields, the generated twins and the general-ability measures; the edits' text, the pitfall
message, notes, generated answers and object labels (the published data's text) are left out. A chain's record keeps
one empty string per edit, so that the lifelong view still counts the edits the chain applied.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from harness.records import CASES_FILE, RUN_FILE
from harness.run_files import read_cases

KEPT = Path(__file__).resolve().parents[1] / "docs" / "findings" / "gemma3-270m-gpt2xl"
RECORD_FIELDS = ("case_id", "benchmark", "split", "index", "group", "status", "seed", "metrics", "pitfall", "seconds_edit",
                 "seconds_eval", "device", "worker")
# Kept when set: a chain's fields (--sequential), the generated twins (--generation; the answers' text is left out, it
# holds the data's prompts) and the general-ability measures (--general-ability).
OPTIONAL_FIELDS = ("chain", "chain_position", "chain_segment", "original_metrics", "retention", "generation_metrics",
                "generation_pitfall", "general_ability", "threads")


def numeric_scores(scores: dict) -> dict:
    """The scores without labels: numbers and lists of numbers only."""
    return {k: v for k, v in scores.items()
            if isinstance(v, (int, float)) or (isinstance(v, list) and all(isinstance(x, (int, float)) for x in v))}


def save(results: Path, kept: Path) -> list[tuple[str, int]]:
    """Each run folder of ``results``: its finished records, without text, into ``kept/<run>``; (run, cases) kept."""
    saved = []
    for run in sorted(p for p in results.iterdir() if (p / CASES_FILE).is_file()):
        records = [r for r in read_cases(run / CASES_FILE).latest() if r.ok]
        target = kept / run.name
        target.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({**{f: getattr(r, f) for f in RECORD_FIELDS},
                             **{f: getattr(r, f) for f in OPTIONAL_FIELDS if getattr(r, f) not in (None, "", {}, [])},
                             **({"edits": [""] * len(r.edits)} if r.chain else {}),
                             "scores": numeric_scores(r.scores)}, allow_nan=True) for r in records]
        (target / CASES_FILE).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        if (run / RUN_FILE).is_file():
            shutil.copyfile(run / RUN_FILE, target / RUN_FILE)
        saved.append((run.name, len(records)))
    return saved


def restore(kept: Path, results: Path) -> list[tuple[str, int]]:
    """The kept runs into ``results`` where that folder has no run of the same name yet; (run, cases) restored."""
    restored = []
    for run in sorted(p for p in kept.iterdir() if (p / CASES_FILE).is_file()):
        target = results / run.name
        if (target / CASES_FILE).exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name in (CASES_FILE, RUN_FILE):
            if (run / name).is_file():
                shutil.copyfile(run / name, target / name)
        restored.append((run.name, sum(1 for _ in (run / CASES_FILE).open(encoding="utf-8"))))
    return restored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.findings", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("save", "restore"))
    parser.add_argument("results", help="the results folder of python -m reports.compare --out")
    parser.add_argument("--kept", default=str(KEPT), help=f"where the records are kept (default {KEPT})")
    args = parser.parse_args(argv)
    results, kept = Path(args.results), Path(args.kept)
    source = results if args.action == "save" else kept
    if not source.is_dir():
        print(f"error: {source} is not a folder (nothing to {args.action})", file=sys.stderr)
        return 2
    done = save(results, kept) if args.action == "save" else restore(kept, results)
    for run, cases in done:
        print(f"{args.action}d {run}: {cases} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
