"""Module editors (``Editor.kind = "modules"``): patches the harness installs, journals along a chain, removes and
proves removed; the guard and the checker catch a module editor that breaks the contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.chain import Chain
from harness.check_editor import run_checks
from harness.guard import EditFailure, ModelGuard, ModelState
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.fingerprints import parameter_digest
from pitfalls_editkit.models import reload_weights
from pitfalls_editkit.scoring import Scorer
from tests import broken_editors as broken
from tests.helpers import records, run_pytest, suite_args


@pytest.fixture()
def llama(tiny_loader):
    return tiny_loader("tiny-llama")


def first_edits(published: Path, n: int):
    return [case.edit for case in load_dataset(published / "GPT2-XL", splits=("easy",), limit=n).cases["easy"]]


def test_a_patch_changes_the_scores_while_installed_and_nothing_is_left_after_the_case(llama, cache_dir, published):
    model = llama.model
    editor = broken.Steer(llama, EditorSettings(cache_dir=cache_dir))
    guard = ModelGuard(model)
    scorer = Scorer(model, llama.tokenizer)
    (edit,) = first_edits(published, 1)
    digest, state = parameter_digest(model), ModelState.read(model)
    before = scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label])
    with guard.case(editor) as case:
        case.apply([edit], seed=0)
        assert list(case.patches.patches) == [broken.STEERED]
        during = scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label])
        assert during[0] - during[1] > before[0] - before[1]  # the patch runs in scoring
        assert parameter_digest(model) == digest  # and no weight changed
    after = ModelState.read(model)
    assert parameter_digest(model) == digest and after.hooks == state.hooks and after.modules == state.modules
    assert scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label]) == before


@pytest.mark.parametrize(("editor_class", "message"), [
    (broken.SteerLeavesAHook, "left a hook behind (_forward_hooks on 'model.layers.1')"),
    (broken.SteerChangesAWeight, "changed 'model.layers.0.mlp.down_proj.weight', which it did not declare"),
    (broken.SteerAddsAModule, "changed the module tree (added ['model.layers.1.extra']"),
    (broken.SteerReturnsNothing, "apply() must return a mapping of module name to Patch, got NoneType"),
])
def test_a_module_editor_that_breaks_the_contract_is_one_line_and_the_model_comes_back(llama, cache_dir, published,
                                                                                       editor_class, message):
    model = llama.model
    digest, state = parameter_digest(model), ModelState.read(model)
    guard = ModelGuard(model, reload=lambda: reload_weights(llama, cache_dir))  # an undeclared weight comes back from its source
    editor = editor_class(llama, EditorSettings(cache_dir=cache_dir))
    with pytest.raises(EditFailure) as failure:
        with guard.case(editor) as case:
            case.apply(first_edits(published, 1), seed=0)
    assert message in str(failure.value), str(failure.value)
    if editor_class is broken.SteerAddsAModule:
        del model.get_submodule(broken.STEERED).extra  # the guard restores tensors and hooks; a module it names
    after = ModelState.read(model)
    assert parameter_digest(model) == digest and after.hooks == state.hooks and after.modules == state.modules


def test_a_failed_edit_on_a_chain_puts_the_patches_back_as_they_were(llama, cache_dir, published):
    model = llama.model
    digest = parameter_digest(model)
    editor = broken.SteerFailsThird(llama, EditorSettings(cache_dir=cache_dir))
    chain = Chain(ModelGuard(model), editor, "chain-1-of-1")
    edits = first_edits(published, 4)
    chain.apply([edits[0]], seed=0)
    chain.apply([edits[1]], seed=1)
    patch = chain.patches.patches[broken.STEERED]
    saved = patch.vectors.clone()
    with pytest.raises(EditFailure, match="injected failure on the third edit"):
        chain.apply([edits[2]], seed=2)
    assert chain.patches.patches[broken.STEERED] is patch and torch.equal(patch.vectors, saved)  # in place, as before
    chain.apply([edits[3]], seed=3)
    assert patch.vectors.shape[0] == 3  # the chain went on from the rolled-back patch
    assert chain.restore() is None  # the end of the chain: patches removed, the model proven original
    assert len(chain.patches) == 0 and parameter_digest(model) == digest


def test_the_checker_passes_a_module_editor_and_fails_one_that_leaves_a_hook(llama, cache_dir):
    good = run_checks(broken.Steer(llama, EditorSettings(cache_dir=cache_dir)), llama)
    assert all(check.passed is not False for check in good), [c for c in good if c.passed is False]
    assert any(c.name == "single edit: installs patches" and c.passed for c in good)
    assert any(c.name == "deterministic under the same seed" and c.passed for c in good)
    bad = run_checks(broken.SteerLeavesAHook(llama, EditorSettings(cache_dir=cache_dir)), llama)
    assert any(c.passed is False and "left a hook behind" in c.detail for c in bad), bad


@pytest.mark.slow
def test_a_module_editor_runs_in_the_suites_alone_and_on_a_chain(published, cache_dir, tmp_path):
    for name, extra in (("cases", ()), ("chain", ("--sequential",))):
        proc = run_pytest(suite_args(published, tmp_path, "--editor", "tests.broken_editors:Steer", "--record-only", "--limit", "1",
                                     *extra, model="tiny-llama", run_name=name), cache_dir)
        assert proc.returncode == 0, proc.output[-3000:]
        lines = records(tmp_path / name / "cases.jsonl")
        assert len(lines) == 5 and {r["status"] for r in lines} == {"ok"}, [r.get("error") for r in lines]


@pytest.mark.slow
def test_a_patch_that_raises_while_the_case_scores_is_that_cases_error_and_the_next_case_runs_clean(published, cache_dir,
                                                                                                    tmp_path):
    proc = run_pytest(suite_args(published, tmp_path, "--editor", "tests.broken_editors:SteerPatchRaisesInScoring",
                                 "--record-only", "--limit", "1", "-m", "easy or hard", model="tiny-llama", run_name="raises"),
                      cache_dir)
    first, second = records(tmp_path / "raises" / "cases.jsonl")
    assert first["status"] == "error" and "injected failure inside the patch" in first["error"], first
    assert second["status"] == "ok", second  # its unedited-model scores ran with no patch of the first case left
    assert "Traceback" not in proc.output
