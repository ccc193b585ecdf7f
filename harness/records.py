"""Results on disk: ``run.json`` once per run, ``cases.jsonl`` as cases finish, ``summary.json`` at the end.

A case's result is a :class:`CaseRecord`, written as one JSON line and read
back into the same dataclass; the run's configuration (model, fingerprint,
editor, hyper-parameters, versions) is written once, in ``run.json``. ``run.json``,
``summary.json`` and ``selection.json`` are replaced atomically; they are read
back through :mod:`harness.run_files`, which checks them. Only the
controlling pytest process writes (under xdist the workers send each case's
record with its test report), so lines never interleave.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import re
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from pitfalls_benchmark import metrics as M
from pitfalls_benchmark.splits import SPLIT_ORDER, SPLITS

RUN_FILE = "run.json"
CASES_FILE = "cases.jsonl"
SUMMARY_FILE = "summary.json"
SELECTION_FILE = "selection.json"


@dataclass
class CaseRecord:
    """One finished case: one line of ``cases.jsonl``."""

    case_id: str
    benchmark: str  # conflict | round
    split: str
    index: int
    group: str  # the rule (reverse, composite) or relation id (coverage, round): the report's breakdown
    status: str = "ok"  # ok | error
    seed: int | None = None
    scores: dict[str, Any] = field(default_factory=dict)  # raw scores every metric was computed from
    metrics: dict[str, float] = field(default_factory=dict)
    pitfall: bool = False
    pitfall_message: str = ""
    error: str = ""  # one line, for status "error"
    seconds_edit: float = 0.0
    seconds_eval: float = 0.0
    edits: list[str] = field(default_factory=list)  # human-readable edits applied
    notes: list[str] = field(default_factory=list)
    device: str = ""
    worker: str = ""  # the xdist worker id, or "" without xdist
    threads: int | None = None  # torch's CPU threads in the process that ran it: FT's numbers differ between 1 and 2
    # Sequential mode (--sequential): which chain, how many edits it had applied before this case, which segment of it.
    chain: str = ""
    chain_position: int | None = None
    chain_segment: int | None = None
    original_metrics: dict[str, float] = field(default_factory=dict)  # RoundEdit against the truly original model
    retention: dict[str, float] = field(default_factory=dict)  # measured after this case: earlier edits that still hold
    # --generation: the 0/1 metrics and the pitfall verdict again, from greedy answers instead of teacher-forced scores.
    generation_metrics: dict[str, float] = field(default_factory=dict)
    generation_pitfall: bool | None = None
    generated: list[str] = field(default_factory=list)  # "prompt => answer", in the order the case asked them
    # --general-ability: the measures on the case's edited model (on a chain: where a measurement was due)
    general_ability: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, allow_nan=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseRecord:
        """Read a line back; unknown keys (such as the per-line ``config`` of older runs) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def run_folder(results_dir: Path, run_name: str | None, editor: str, model: str, mle: bool) -> Path:
    """``<results-dir>/<run>``; by default a timestamped name with model and editor."""
    if not run_name:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        label = f"{editor}+mle" if mle else editor
        safe = lambda text: re.sub(r"[^A-Za-z0-9._+-]+", "_", text)
        run_name = f"{stamp}-{safe(Path(model).name or model)}-{safe(label)}"
    folder = results_dir / run_name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class CaseLog:
    """Append-only ``cases.jsonl``: one line per finished case, flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("a", encoding="utf-8")

    def write(self, record: CaseRecord) -> None:
        self._handle.write(record.to_json() + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` through a temporary file renamed over it (``pitfalls_editkit.cache.atomic_replace``):
    a crash or a full disk leaves the old file or the new one, never a torn one."""
    from pitfalls_editkit.cache import atomic_replace  # imports torch: not at the plugin's load

    atomic_replace(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


# run.json keys that may differ between two sessions of one run: with what software it ran, how it was asked, and
# paths (a clean worktree elsewhere runs the same files; the values read from them are compared instead).
NOT_WHAT_IT_USED = frozenset({"versions", "git_commit", "requested", "hparams_file", "dataset_dir", "stats_dir"})


def what_it_used_differs(before: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first value two run configurations both hold and differ in (``hparams.layers``, ``model_fingerprint`` ...).

    None when they agree, or when ``before`` was written before any case reached the editor (no fingerprint yet).
    """
    if "model_fingerprint" not in before:
        return None
    plain = lambda value: json.loads(json.dumps(value, ensure_ascii=False, default=str))

    def first_difference(a: Any, b: Any, where: str) -> str | None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in a.keys() & b.keys():
                found = first_difference(a[key], b[key], f"{where}.{key}" if where else str(key))
                if found:
                    return found
            return None
        return f"{where}={a!r}, this one uses {where}={b!r}" if a != b else None

    common = sorted((before.keys() & now.keys()) - NOT_WHAT_IT_USED)
    return first_difference({k: plain(before[k]) for k in common}, {k: plain(now[k]) for k in common}, "")


def write_run_config(folder: Path, config: dict[str, Any]) -> None:
    write_atomically(folder / RUN_FILE, json.dumps(config, indent=1, ensure_ascii=False, default=str))


def summarize(records: list[CaseRecord]) -> dict[str, Any]:
    """Per split: n, pitfall count, errors, and every metric in % with its 95% interval."""
    scored = [r for r in records if r.ok]
    summary: dict[str, Any] = {}
    if not scored:
        return summary
    frame = pd.DataFrame([{"split": r.split, **r.metrics} for r in scored])
    for split in SPLIT_ORDER:
        rows = frame[frame["split"] == split]
        if rows.empty:
            continue
        summary[split] = {
            "n": len(rows),
            "errors": sum(1 for r in records if r.split == split and not r.ok),
            "pitfalls": sum(1 for r in scored if r.split == split and r.pitfall),
            "metrics": {name: M.aggregate(name, rows[name].dropna().tolist()) for name in SPLITS[split].metrics if name in rows},
        }
        generated = [r for r in scored if r.split == split and r.generation_pitfall is not None]
        if generated:
            summary[split]["generation"] = generation_summary(split, generated)
        measured = [r.general_ability for r in scored if r.split == split and r.general_ability]
        if measured:
            summary[split]["general_ability"] = {
                name: mean_with_interval([v[name] for v in measured if name in v], name)
                for name in sorted({name for values in measured for name in values})}
    return summary


# The range of each general-ability measure, by its kind (the name before any ":"): perplexity is exp of a mean loss
# that is never negative, the quiz a share of questions. An lm-eval task's metrics have no range known here.
ABILITY_RANGES = {"perplexity": (1.0, math.inf), "kg": (0.0, 1.0)}


def mean_with_interval(values: list[float], name: str) -> dict[str, float | int]:
    """Measure ``name``'s mean over its measurements (not in %), its 95% Student-t interval clipped to the measure's
    range, and n."""
    low, high = M.mean_interval(values, ABILITY_RANGES.get(name.split(":")[0], (-math.inf, math.inf)))
    return {"mean": math.fsum(values) / len(values), "low": low, "high": high, "n": len(values)}


def generation_summary(split: str, records: list[CaseRecord]) -> dict[str, Any]:
    """--generation, per split: the generated twins aggregated, their pitfall count, and how often the generated
    pitfall verdict agrees with the teacher-forced one (a rate, with its Wilson interval)."""
    names = [name for name in SPLITS[split].metrics if all(name in r.generation_metrics for r in records)]
    return {
        "n": len(records),
        "pitfalls": sum(1 for r in records if r.generation_pitfall),
        "agreement": M.aggregate("FR", [float(r.generation_pitfall == r.pitfall) for r in records]),  # a 0/1 rate
        "metrics": {name: M.aggregate(name, [r.generation_metrics[name] for r in records]) for name in names},
    }


def git_commit(folder: Path | None = None) -> str | None:
    """The commit of the harness's checkout (None when it is not a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder or Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "pandas": pd.__version__}


def write_summary(folder: Path, records: list[CaseRecord], config: dict[str, Any]) -> dict[str, Any]:
    summary = {"config": config, "splits": summarize(records)}
    write_atomically(folder / SUMMARY_FILE, json.dumps(summary, indent=1, ensure_ascii=False, default=_nan_safe))
    return summary


def _nan_safe(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)
