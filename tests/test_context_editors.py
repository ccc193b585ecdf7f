"""Context editors (``Editor.kind = "context"``) and IKE: the prompt transform is in force in scoring while the edit
is, no weight ever changes, the context is cleared after the case and rolled back along a chain, and IKE's
demonstrations never hold the case's own facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from editors.ike import IKE
from harness.chain import Chain
from harness.check_editor import run_checks
from harness.executors.workbench import Workbench
from harness.guard import EditFailure, ModelGuard, ModelState
from pitfalls_benchmark.datasets import ConflictCase, RoundCase, example_edits, load_dataset
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.fingerprints import parameter_digest
from pitfalls_editkit.models import reload_weights
from tests import broken_editors as broken
from tests.helpers import records, run_pytest, settings_with_examples, suite_args


@pytest.fixture()
def llama(tiny_loader):
    return tiny_loader("tiny-llama")


def first_edits(published: Path, n: int):
    return [case.edit for case in load_dataset(published / "GPT2-XL", splits=("easy",), limit=n).cases["easy"]]


def test_the_context_is_in_force_in_scoring_while_the_edit_is_and_gone_after(llama, cache_dir, published):
    bench = Workbench.build(broken.Preface(llama, EditorSettings(cache_dir=cache_dir)))
    (edit,) = first_edits(published, 1)
    digest, state = parameter_digest(llama.model), ModelState.read(llama.model)
    before = bench.scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label])
    with bench.guard.case(bench.editor) as case:
        case.apply([edit], seed=0)
        assert bench.guard.context.prompt(edit.prompt) == f"{edit.prompt} {edit.new_object.label}. {edit.prompt}"
        during = bench.scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label])
        assert during != before  # the scorer was given the context
        assert parameter_digest(llama.model) == digest
    assert bench.guard.context.current is None
    after = ModelState.read(llama.model)
    assert parameter_digest(llama.model) == digest and after.hooks == state.hooks and after.modules == state.modules
    assert bench.scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label]) == before


@pytest.mark.parametrize(("editor_class", "message"), [
    (broken.PrefaceChangesAWeight, "changed 'model.layers.0.mlp.down_proj.weight', which it did not declare"),
    (broken.PrefaceReturnsNothing, "apply() must return a Context, got NoneType"),
])
def test_a_context_editor_that_breaks_the_contract_is_one_line_and_the_model_comes_back(llama, cache_dir, published,
                                                                                        editor_class, message):
    digest = parameter_digest(llama.model)
    guard = ModelGuard(llama.model, reload=lambda: reload_weights(llama, cache_dir))
    with pytest.raises(EditFailure) as failure:
        with guard.case(editor_class(llama, EditorSettings(cache_dir=cache_dir))) as case:
            case.apply(first_edits(published, 1), seed=0)
    assert message in str(failure.value), str(failure.value)
    assert parameter_digest(llama.model) == digest and guard.context.current is None


def test_a_failed_edit_on_a_chain_puts_the_context_back_as_it_was(llama, cache_dir, published):
    editor = broken.PrefaceFailsThird(llama, EditorSettings(cache_dir=cache_dir))
    guard = ModelGuard(llama.model)
    chain = Chain(guard, editor, "chain-1-of-1")
    edits = first_edits(published, 4)
    chain.apply([edits[0]], seed=0)
    chain.apply([edits[1]], seed=1)
    context, saved = guard.context.current, list(guard.context.current.facts)
    with pytest.raises(EditFailure, match="injected failure on the third edit"):
        chain.apply([edits[2]], seed=2)
    assert guard.context.current is context and context.facts == saved  # in place, as before the failed edit
    chain.apply([edits[3]], seed=3)
    assert len(context.facts) == 3
    assert chain.restore() is None and guard.context.current is None


def test_the_checker_passes_a_context_editor_and_ike_and_fails_one_that_changes_a_weight(llama, cache_dir, published):
    for good_editor in (broken.Preface(llama, EditorSettings(cache_dir=cache_dir)), IKE(llama, settings_with_examples(cache_dir, published))):
        good = run_checks(good_editor, llama)
        assert all(check.passed is not False for check in good), [c for c in good if c.passed is False]
        assert any(c.name == "single edit: installs a context that changes the prompt" and c.passed for c in good)
        assert any(c.name == "deterministic under the same seed" and c.passed for c in good)
    bad = run_checks(broken.PrefaceChangesAWeight(llama, EditorSettings(cache_dir=cache_dir)), llama,
                     reload=lambda: reload_weights(llama, cache_dir))
    assert any(c.passed is False and "which it did not declare" in c.detail for c in bad), bad


def case_entities(case) -> set[str]:
    if isinstance(case, RoundCase):
        entities = [case.edit.subject, case.edit.object, case.edit.new_object, *case.true_objects]
    else:
        assert isinstance(case, ConflictCase)
        entities = [e for fact in case.triples for e in (fact.subject, fact.object)]
        entities += [e for edit in case.edits for e in (edit.subject, edit.object, edit.new_object)]
    return {e.id for e in entities if e.id} | {e.label for e in entities}


def test_ike_demonstrations_never_hold_the_cases_own_facts_and_never_change_a_weight(llama, cache_dir, published):
    dataset = load_dataset(published / "GPT2-XL", limit=40)
    examples = {(e.edit.prompt, e.edit.new_object.label): e.edit for e in example_edits(published / "GPT2-XL")}
    by_line: dict[str, object] = {}  # each "New Fact:" line's example: the first whose prompt and new object spell it
    for (prompt, new), edit in examples.items():
        by_line.setdefault(f"{prompt} {new}", edit)
    editor = IKE(llama, settings_with_examples(cache_dir, published))
    guard = ModelGuard(llama.model)
    digest = parameter_digest(llama.model)
    checked = 0
    for case in dataset.all_cases():
        edits = [case.edit] if isinstance(case, RoundCase) else list(case.edits)
        with guard.case(editor) as applied:
            for number, edit in enumerate(edits):
                applied.apply([edit], seed=number)
            context = guard.context.current
            assert len(context.demonstrations) == editor.hparams.k and context.edits == edits
            own = case_entities(case)
            for text in context.demonstrations:
                new_fact = text.removeprefix("New Fact: ").split("\n")[0]
                shown = by_line[new_fact]
                assert not ({shown.subject.id, shown.subject.label, shown.object.label, shown.new_object.label} & own), (case.case_id, text)
            checked += 1
        assert parameter_digest(llama.model) == digest and guard.context.current is None
    assert checked == len(dataset.all_cases()) == 200


def test_ike_states_the_edit_in_the_references_format_and_draws_the_same_demonstrations_for_the_same_seed(llama, cache_dir,
                                                                                                          published):
    editor = IKE(llama, settings_with_examples(cache_dir, published))
    guard = ModelGuard(llama.model)
    edit, other = first_edits(published, 2)
    drawn = []
    for _ in range(2):
        with guard.case(editor) as case:
            case.apply([edit], seed=7)
            text = guard.context.prompt(other.prompt)
            drawn.append(text)
    assert drawn[0] == drawn[1]
    assert text.endswith(f"New Fact: {edit.prompt} {edit.new_object.label}\nPrompt: {other.prompt}")
    assert text.count("New Fact: ") == editor.hparams.k + 1
    with guard.case(editor) as case:
        case.apply([edit], seed=8)
        assert guard.context.prompt(other.prompt) != drawn[0]  # another seed, other demonstrations


def test_ike_without_enough_dataset_edits_is_one_clear_error(llama, cache_dir, published):
    editor = IKE(llama, EditorSettings(cache_dir=cache_dir))  # no dataset edits given
    with pytest.raises(EditFailure, match=r"IKE needs 5 dataset edits unrelated to the edits in force for 4 demonstrations, found 0"):
        with ModelGuard(llama.model).case(editor) as case:
            case.apply(first_edits(published, 1), seed=0)


@pytest.mark.slow
def test_a_context_editor_runs_in_the_suites_alone_and_on_a_chain(published, cache_dir, tmp_path):
    for name, extra in (("cases", ()), ("chain", ("--sequential",))):
        proc = run_pytest(suite_args(published, tmp_path, "--editor", "tests.broken_editors:Preface", "--record-only", "--limit", "1",
                                     *extra, model="tiny-llama", run_name=name), cache_dir)
        assert proc.returncode == 0, proc.output[-3000:]
        lines = records(tmp_path / name / "cases.jsonl")
        assert len(lines) == 5 and {r["status"] for r in lines} == {"ok"}, [r.get("error") for r in lines]
