"""GRACE on the tiny models: the edit answers inside its key's radius and nothing changes outside it, a round trip
splits the radii of two keys, the model comes back bit-identical, the checker and the suites run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from editors.grace import GRACE
from harness.check_editor import run_checks
from harness.guard import ModelGuard, ModelState
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.facts import Edit
from pitfalls_editkit.fingerprints import parameter_digest
from pitfalls_editkit.hparams import HyperParamsError
from pitfalls_editkit.scoring import Scorer
from tests.helpers import REPO, records, run_pytest, suite_args


def easy_edits(published: Path, n: int) -> list[Edit]:
    return [case.edit for case in load_dataset(published / "GPT2-XL", splits=("easy",), limit=n).cases["easy"]]


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2"])
def test_an_edit_holds_inside_its_radius_and_nothing_changes_outside(tiny_loader, cache_dir, published, model):
    loaded = tiny_loader(model)
    editor, guard, scorer = GRACE(loaded, EditorSettings(cache_dir=cache_dir)), ModelGuard(loaded.model), Scorer(loaded.model, loaded.tokenizer)
    edit, other = easy_edits(published, 2)
    digest, state = parameter_digest(loaded.model), ModelState.read(loaded.model)
    unrelated = scorer.fact_scores([other.prompt], [other.new_object.label, other.object.label])
    with guard.case(editor) as case:
        case.apply([edit], seed=0)
        new, old = scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label])
        assert new > old
        assert scorer.fact_scores([other.prompt], [other.new_object.label, other.object.label]) == unrelated  # bit for bit
        assert parameter_digest(loaded.model) == digest  # no weight is written
    after = ModelState.read(loaded.model)
    assert parameter_digest(loaded.model) == digest and after.hooks == state.hooks and after.modules == state.modules


def test_a_round_trip_splits_the_two_keys_radii_and_the_last_edit_answers(tiny_loader, cache_dir, published):
    loaded = tiny_loader("tiny-llama")
    editor, guard, scorer = GRACE(loaded, EditorSettings(cache_dir=cache_dir)), ModelGuard(loaded.model), Scorer(loaded.model, loaded.tokenizer)
    (edit,) = easy_edits(published, 1)
    back = Edit(edit.subject, edit.relation, edit.new_object, edit.object)  # B -> A, the RoundEdit's second step
    with guard.case(editor) as case:
        case.apply([edit], seed=0)
        case.apply([back], seed=1)
        book = editor.codebook
        assert book.labels == [edit.new_object.label, edit.object.label]
        assert float(book.radii[0]) < 0 <= float(book.radii[1])  # the same key, another object: the old one gives way
        new, old = scorer.fact_scores([edit.prompt], [edit.object.label, edit.new_object.label])
        assert new > old


def test_the_checker_passes_grace(tiny_loader, cache_dir):
    checks = run_checks(GRACE(tiny_loader("tiny-llama"), EditorSettings(cache_dir=cache_dir)), tiny_loader("tiny-llama"))
    assert all(check.passed is not False for check in checks), [c for c in checks if c.passed is False]


@pytest.mark.parametrize(("change", "message"), [
    ({"layers": [0, 1]}, "GRACE wraps one layer; give one"),
    ({"val_init": "tepid"}, "val_init 'tepid': expected one of cold, warm"),
    ({"eps": 0}, "eps = 0: must be > 0"),
    ({"module_tmp": "model.layers.{}.nothing"}, "which is not a module of the model"),
])
def test_bad_hyper_parameters_are_one_line_naming_the_file(tiny_loader, cache_dir, tmp_path, change, message):
    values = {**json.loads((REPO / "editors" / "hparams" / "grace" / "tiny-llama.json").read_text()), **change}
    (tmp_path / "grace.json").write_text(json.dumps(values))
    with pytest.raises(HyperParamsError, match="grace.json") as failure:
        GRACE(tiny_loader("tiny-llama"), EditorSettings(cache_dir=cache_dir, hparams_file=tmp_path / "grace.json"))
    assert message in str(failure.value)


@pytest.mark.slow
def test_grace_runs_every_split_in_the_suites_alone_and_on_a_chain(published, cache_dir, tmp_path):
    for name, extra in (("cases", ("--limit", "2")), ("chain", ("--limit", "2", "--sequential", "--retention-every", "2"))):
        proc = run_pytest(suite_args(published, tmp_path, "--editor", "grace", "--record-only", *extra, model="tiny-llama",
                                     run_name=name), cache_dir)
        assert proc.returncode == 0, proc.output[-3000:]
        lines = records(tmp_path / name / "cases.jsonl")
        assert len(lines) == 10 and {r["status"] for r in lines} == {"ok"}, [r.get("error") for r in lines]
        assert {r["split"] for r in lines} == {"coverage", "reverse", "composite", "easy", "hard"}
