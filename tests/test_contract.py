"""The editor contract: the checker, the harness's guard, plugins by entry point and module:Class, a user's own test file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from editors import make_editor
from harness.check_editor import run_checks
from harness.executors.lockstep import start_batch
from harness.executors.single import run_one
from harness.executors.workbench import Workbench
from harness.guard import EditFailure, ModelGuard
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.fingerprints import parameter_digest
from pitfalls_editkit.models import reload_weights
from tests.helpers import REPO, records, run_inprocess, run_pytest, run_subprocess
from tests.helpers import quick_settings as settings

EXAMPLE = REPO / "examples" / "example_editor"
EXAMPLE_CLASS = "pitfalls_example_editor.editing:OneLayerFT"
MODULE_EXAMPLE = REPO / "examples" / "module_editor"  # a module editor plugin, written from the docs
MODULE_EXAMPLE_CLASS = "pitfalls_example_module_editor.editing:LogitMemory"


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example editor, installed by pip (real wheel, real entry points) into a folder of its own.

    ``--target`` keeps the test from changing the environment; the folder goes on PYTHONPATH of the runs below.
    """
    target = tmp_path_factory.mktemp("site")
    for example in (EXAMPLE, MODULE_EXAMPLE):
        source = tmp_path_factory.mktemp("src") / example.name
        shutil.copytree(example, source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                               "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(target.glob("pitfalls_example_editor-*.dist-info/entry_points.txt"))
    assert list(target.glob("pitfalls_example_module_editor-*.dist-info/entry_points.txt"))
    return target


@pytest.mark.parametrize("spec", ["rome", "memit", "ft", "mend", "r-rome", "emmet", "alphaedit", "grace", "wise", "lora", "ike",
                                  EXAMPLE_CLASS, MODULE_EXAMPLE_CLASS])
def test_checker_passes_every_shipped_editor_and_the_example(tiny_loader, cache_dir, spec, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(MODULE_EXAMPLE))
    loaded = tiny_loader("tiny-llama")
    editor = make_editor(spec, loaded, settings(cache_dir))
    checks = run_checks(editor, loaded)
    assert [c for c in checks if c.passed is False] == []
    names = {c.name for c in checks}
    assert {"single edit: changes only declared parameters", "single edit: undo restores every tensor bit for bit",
            "deterministic under the same seed", "no hooks left behind"} <= names
    assert any(name.startswith("batch of 3") for name in names) == editor.supports_batch


@pytest.mark.parametrize(("spec", "expected"), [
    ("tests.broken_editors:UndeclaredChange", "changed 'model.embed_tokens.weight', which it did not declare"),
    ("tests.broken_editors:UndeclaredInPlace", "changed 'model.layers.1.mlp.down_proj.weight', which it did not declare"),
    ("tests.broken_editors:RaisesMidEdit", "raised FloatingPointError during"),
    ("tests.broken_editors:LeavesHook", "left a hook behind"),
    ("tests.broken_editors:UndeclaredFactors", "compute_updates() changes model.layers.0.mlp.up_proj.weight, which it does not declare"),
    ("tests.broken_editors:ChangesInComputeUpdates", "changed the model in compute_updates(), which must not"),
])
def test_checker_catches_a_broken_editor(tiny_loader, cache_dir, spec, expected):
    loaded = tiny_loader("tiny-llama")
    original = parameter_digest(loaded.model)
    editor = make_editor(spec, loaded, settings(cache_dir))
    failed = [c for c in run_checks(editor, loaded, reload=lambda: reload_weights(loaded, cache_dir)) if c.passed is False]
    assert failed and any(expected in c.detail for c in failed), failed
    assert any(name in c.detail for c in failed for name in ("undeclared-change", "undeclared-in-place", "raises-mid-edit", "leaves-hook",
                                                                   "undeclared-factors", "changes-in-compute-updates"))
    assert parameter_digest(loaded.model) == original


@pytest.mark.slow
def test_checker_command_exit_status(cache_dir):
    check = lambda spec: run_inprocess("check", ["--model", "tiny-llama", spec], cache_dir)
    good = check("editors.rome:ROME")
    assert good.returncode == 0 and "every check passed" in good.stdout, good.output
    bad = check("tests.broken_editors:UndeclaredChange")
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "Traceback" not in bad.output
    unknown = run_subprocess("check", ["--model", "tiny-llama", "nosuch"], cache_dir)  # as a user's shell sees it
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: --editor 'nosuch': unknown editor")


@pytest.mark.parametrize("broken", ["UndeclaredChange", "UndeclaredInPlace", "RaisesMidEdit"])
def test_after_a_failed_edit_the_next_case_runs_on_the_original_weights(tiny_loader, cache_dir, published, broken):
    loaded = tiny_loader("tiny-llama")
    original = parameter_digest(loaded.model)
    dataset = load_dataset(published / "GPT2-XL", splits=("easy", "reverse"), limit=1)
    easy, reverse = dataset.cases["easy"][0], dataset.cases["reverse"][0]
    guard = ModelGuard(loaded.model, reload=lambda: reload_weights(loaded, cache_dir))
    bad = Workbench.build(make_editor(f"tests.broken_editors:{broken}", loaded, settings(cache_dir)), dataset, guard)
    with pytest.raises(EditFailure, match="editor '(undeclared-change|undeclared-in-place|raises-mid-edit)'"):
        run_one(bad, easy)
    assert parameter_digest(loaded.model) == original
    good = make_editor("tests.broken_editors:Fine", loaded, settings(cache_dir))
    after_failure = run_one(Workbench.build(good, dataset, guard), reverse)
    fresh = tiny_loader("tiny-llama")
    on_fresh = run_one(Workbench.build(make_editor("tests.broken_editors:Fine", fresh, settings(cache_dir)), dataset), reverse)
    assert after_failure.scores == on_fresh.scores and after_failure.metrics == on_fresh.metrics
    assert parameter_digest(loaded.model) == original


@pytest.mark.slow
def test_the_suites_record_an_editor_failure_on_its_case_and_go_on(published, cache_dir, tmp_path):
    proc = run_pytest(["suites/", "--model", "tiny-llama", "--editor", "tests.broken_editors:UndeclaredChange",
                       "--dataset-dir", str(published / "GPT2-XL"), "--limit", "2", "-m", "easy",
                       "--results-dir", str(tmp_path), "--run-name", "broken"], cache_dir)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout
    done = records(tmp_path / "broken" / "cases.jsonl")
    assert [r["status"] for r in done] == ["error", "error"]
    assert all("editor 'undeclared-change' changed 'model.embed_tokens.weight'" in r["error"] for r in done)
    assert "easy: 0 cases scored, every case an error" in proc.stdout


@pytest.mark.slow
def test_a_plugin_editor_runs_by_entry_point_and_by_class_beside_rome(example_installed, published, cache_dir, tmp_path):
    common = ["suites/", "--model", "tiny-llama", "--dataset-dir", str(published / "GPT2-XL"), "--limit", "1", "-m", "easy",
              "--record-only", "--results-dir", str(tmp_path), "--stats-tokens", "5000"]
    runs = {"by-name": "example-ft", "by-class": EXAMPLE_CLASS, "rome": "rome"}
    for run_name, spec in runs.items():
        proc = run_pytest([*common, "--editor", spec, "--run-name", run_name], cache_dir, pythonpath=[example_installed])
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        config = json.loads((tmp_path / run_name / "run.json").read_text())
        assert config["editor"] == ("rome" if spec == "rome" else "example-ft")
        if spec != "rome":
            assert config["editor_class"] == EXAMPLE_CLASS and config["hparams_file"].endswith("hparams/llama.json")
    report = subprocess.run([sys.executable, "-m", "reports", str(tmp_path / "by-name"), str(tmp_path / "rome"), "-o",
                             str(tmp_path / "both.html")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "both.html").read_text(encoding="utf-8")
    assert "example-ft" in html and "rome" in html
    unknown = run_pytest(["suites/", "--editor", "nosuch"], cache_dir, pythonpath=[example_installed])
    assert "unknown editor (known: alphaedit, emmet, example-ft, ft, grace, ike, logit-memory, lora, memit, mend, r-rome, rome, wise;" in unknown.stderr


@pytest.mark.slow
def test_a_module_editor_plugin_written_from_the_docs_runs_by_entry_point(example_installed, published, cache_dir, tmp_path):
    proc = run_pytest(["suites/", "--model", "tiny-llama", "--dataset-dir", str(published / "GPT2-XL"), "--limit", "1",
                       "--record-only", "--results-dir", str(tmp_path), "--editor", "logit-memory", "--run-name", "plugin"],
                      cache_dir, pythonpath=[example_installed])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    config = json.loads((tmp_path / "plugin" / "run.json").read_text())
    assert config["editor"] == "logit-memory" and config["editor_class"] == MODULE_EXAMPLE_CLASS
    lines = [json.loads(line) for line in (tmp_path / "plugin" / "cases.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and {r["status"] for r in lines} == {"ok"}, [r.get("error") for r in lines]
    checked = subprocess.run([sys.executable, "-m", "harness.check_editor", "logit-memory", "--model", "tiny-llama"], cwd=REPO,
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(example_installed), "PITFALLS_CACHE_DIR": str(cache_dir)})
    assert checked.returncode == 0 and "every check passed" in checked.stdout, checked.stdout[-2000:] + checked.stderr[-2000:]


def test_a_users_own_test_file_runs_a_hand_written_case(cache_dir, tmp_path):
    """The installed plugin works from any folder: the documented hand-written case, as a user would keep it."""
    readme = (REPO / "docs" / "writing-an-editor.md").read_text(encoding="utf-8")
    start = readme.index("# test_my_cases.py")
    source = readme[start : readme.index("```", start)]
    (tmp_path / "test_my_cases.py").write_text(source, encoding="utf-8")
    proc = run_pytest(["test_my_cases.py", "--model", "tiny-gpt2", "--editor", "rome", "--record-only",
                       "--results-dir", str(tmp_path / "results"), "--run-name", "mine", "--stats-tokens", "5000"],
                      cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    done = records(tmp_path / "results" / "mine" / "cases.jsonl")
    assert [r["case_id"] for r in done] == ["easy-0000-P47-france"] and done[0]["status"] == "ok"
    assert "Easy Succ" in proc.stdout


@pytest.mark.slow
def test_an_editor_that_changes_the_model_while_built_is_refused(published, cache_dir, tmp_path):
    proc = run_pytest(["suites/", "--model", "tiny-llama", "--editor", "tests.broken_editors:ChangesWhileBuilt",
                       "--dataset-dir", str(published / "GPT2-XL"), "--limit", "1", "-m", "easy",
                       "--results-dir", str(tmp_path), "--run-name", "built"], cache_dir)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout
    done = records(tmp_path / "built" / "cases.jsonl")
    assert [r["status"] for r in done] == ["error"]
    assert "editor 'changes-while-built' changed the model while being built: model.norm.weight" in done[0]["error"]


@pytest.mark.parametrize(("broken", "expected"), [
    ("ChangesInPrepare", "editor 'changes-in-prepare' changed the model in prepare(), which must not: model.norm.weight"),
    ("RaisesInPrepare", "editor 'raises-in-prepare' raised RuntimeError in prepare() for 2 edits (--case-batch): injected"),
])
def test_a_prepare_that_breaks_the_contract_is_one_error_and_the_model_stays_original(tiny_loader, cache_dir, published, broken,
                                                                                       expected):
    loaded = tiny_loader("tiny-llama")
    original = parameter_digest(loaded.model)
    dataset = load_dataset(published / "GPT2-XL", splits=("easy",), limit=2)
    guard = ModelGuard(loaded.model, reload=lambda: reload_weights(loaded, cache_dir))
    bench = Workbench.build(make_editor(f"tests.broken_editors:{broken}", loaded, settings(cache_dir)), dataset, guard)
    with pytest.raises(EditFailure) as failure:
        start_batch(bench, dataset.cases["easy"])
    assert str(failure.value).startswith(expected)
    assert parameter_digest(loaded.model) == original
    assert run_one(bench, dataset.cases["easy"][0]).status == "ok"  # the cases then edit one at a time
