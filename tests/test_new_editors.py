"""The editors that came after the paper: r-ROME, EMMET and AlphaEdit, on tiny models and through the suites."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from editors import make_editor
from editors.representations import subject_io
from harness.executors.single import run_one
from harness.executors.workbench import Workbench
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.facts import fill
from pitfalls_editkit.fingerprints import parameter_digest
from pitfalls_editkit.hparams import module_name
from pitfalls_editkit.undo import editing
from tests.helpers import first_easy_edits, records, run_pytest
from tests.helpers import quick_settings as settings


def test_r_rome_writes_the_target_for_the_template_averaged_key(tiny_loader, cache_dir, published, monkeypatch):
    """r-ROME's fix: the averaged output over context templates lands exactly on the optimised value (ROME's only
    on the plain prompt)."""
    import editors.value_optimization as value_module

    loaded = tiny_loader("tiny-gpt2")
    editor = make_editor("r-rome", loaded, settings(cache_dir))
    targets = []
    optimize = value_module.optimize_targets
    monkeypatch.setattr(value_module, "optimize_targets", lambda *a, **k: targets.extend(optimize(*a, **k)) or torch.stack(targets))
    edit = first_easy_edits(published, 1)[0]
    rewrite = module_name(editor.hparams.rewrite_module_tmp, editor.hparams.layers[0])
    templates = [fill(t, edit.relation.prompt) for t in editor.context_templates()]
    assert len(templates) > 1
    with editing(loaded.model, editor):
        editor.apply([edit])
        _, outputs = subject_io(loaded, templates, edit.subject.label, rewrite)
    torch.testing.assert_close(outputs.mean(0), targets[0], rtol=1e-4, atol=1e-4)


def test_emmet_meets_every_edit_exactly_when_unregularised(tiny_loader, cache_dir):
    """EMMET's equality constraint: with emmet_lambda = 0 the update maps each edited key onto its residual."""
    editor = make_editor("emmet", tiny_loader("tiny-llama"), settings(cache_dir))
    torch.manual_seed(0)
    size = 32
    basis = torch.randn(size, size, dtype=torch.float64)
    editor.covariance = lambda _name: basis @ basis.T / size + 0.1 * torch.eye(size, dtype=torch.float64)
    keys, residual = torch.randn(size, 4, dtype=torch.float64), torch.randn(16, 4, dtype=torch.float64)
    editor.hparams = dataclasses.replace(editor.hparams, emmet_lambda=0.0)
    update = editor.layer_update("any", keys, residual)
    torch.testing.assert_close(update @ keys, residual)
    editor.hparams = dataclasses.replace(editor.hparams, emmet_lambda=0.1)
    assert not torch.allclose(editor.layer_update("any", keys, residual) @ keys, residual)


def test_alphaedit_leaves_the_preserved_keys_alone(tiny_loader, cache_dir, published):
    """AlphaEdit's update lies in the null space of C's large eigenvalues: it maps those directions to nothing."""
    loaded = tiny_loader("tiny-llama")
    editor = make_editor("alphaedit", loaded, settings(cache_dir))
    hp = editor.hparams
    before = {layer: loaded.model.get_parameter(f"{module_name(hp.rewrite_module_tmp, layer)}.weight").detach().clone()
              for layer in hp.layers}
    with editing(loaded.model, editor):
        editor.apply(first_easy_edits(published, 2))
        for layer, weight in before.items():
            rewrite = module_name(hp.rewrite_module_tmp, layer)
            change = (loaded.model.get_parameter(f"{rewrite}.weight") - weight).double()  # (out, in)
            eigenvalues, vectors = torch.linalg.eigh(editor.covariance(rewrite).double().cpu())
            preserved = vectors[:, eigenvalues >= hp.nullspace_threshold]
            assert 0 < preserved.shape[1] < preserved.shape[0]
            assert change.norm() > 0
            assert (change @ preserved).norm() / change.norm() < 1e-4
        assert set(editor._earlier_keys) == {module_name(hp.rewrite_module_tmp, layer) for layer in hp.layers}
    assert editor._earlier_keys == {}  # forgotten once the model is restored


def test_alphaedit_protects_the_first_edit_of_a_case_when_making_the_second(tiny_loader, cache_dir, published):
    """Within a case the first edit's keys join the preserved ones (the reference's cache_c); a new case starts clean."""
    loaded = tiny_loader("tiny-llama")
    editor = make_editor("alphaedit", loaded, settings(cache_dir))
    first, second = first_easy_edits(published, 2)
    digest = parameter_digest(loaded.model)
    weights = []
    for remember in (True, False):
        with editing(loaded.model, editor):
            editor.apply([first])
            if not remember:
                editor._earlier_keys.clear()
            editor.apply([second])
            weights.append(loaded.model.get_parameter("model.layers.1.mlp.down_proj.weight").detach().clone())
        assert parameter_digest(loaded.model) == digest
    assert not torch.equal(weights[0], weights[1])


@pytest.mark.parametrize("editor_name", ["emmet", "alphaedit"])
def test_mle_works_with_every_batch_editor(tiny_loader, cache_dir, published, editor_name):
    loaded = tiny_loader("tiny-gpt2")
    dataset = load_dataset(published / "GPT2-XL", splits=("easy",), limit=1)
    case = dataset.cases["easy"][0]
    editor = make_editor(editor_name, loaded, settings(cache_dir))
    digest = parameter_digest(loaded.model)
    outcome = run_one(Workbench.build(editor, dataset, mle=True), case)
    assert len(outcome.edits) == 1 + len(case.true_objects)
    assert parameter_digest(loaded.model) == digest


@pytest.mark.slow
def test_the_new_editors_run_in_the_suites_and_the_report(published, cache_dir, tmp_path):
    """``pytest suites/ --editor alphaedit / r-rome / emmet`` run, and the combined report lists them in the editors' order."""
    for editor_name in ("alphaedit", "r-rome", "emmet"):
        proc = run_pytest(["suites/", "--editor", editor_name, "--model", "tiny-llama", "--dataset-dir", str(published / "GPT2-XL"),
                           "--limit", "1", "-k", "coverage or easy", "--record-only", "--stats-tokens", "5000",
                           "--results-dir", str(tmp_path), "--run-name", editor_name], cache_dir)
        assert proc.returncode == 0, proc.stdout[-3000:]
        lines = records(tmp_path / editor_name / "cases.jsonl")
        assert [r["status"] for r in lines] == ["ok", "ok"], lines
        config = json.loads((tmp_path / editor_name / "run.json").read_text())
        assert config["paper_setting"] is False and any("model tiny-llama" in d for d in config["paper_setting_differs"])
    from reports.render import render_report

    out = render_report([tmp_path / "r-rome", tmp_path / "alphaedit", tmp_path / "emmet"], tmp_path / "report.html")
    html = out.read_text(encoding="utf-8")
    positions = [html.index("r-rome · r-rome"), html.index("emmet · emmet"), html.index("alphaedit · alphaedit")]
    assert positions == sorted(positions)
