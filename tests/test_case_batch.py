"""--case-batch K: K cases worked out together (their first edits, or whole cases) give the results of the unbatched run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import records_by_case, run_pytest, suite_args

TOGETHER = ("rome", "r-rome", "memit", "emmet")  # editors that offer compute_updates: whole cases run together


CACHE_PARTS = ("context_templates", "datasets", "mend", "models", "stats", "tokenizers")  # everything but original-scores


def cache_without_original_scores(shared: Path, folder: Path) -> Path:
    """A cache folder whose parts are the session's cache's, except the unedited model's scores (its own, empty)."""
    folder.mkdir()
    for part in CACHE_PARTS:
        (shared / part).mkdir(parents=True, exist_ok=True)
        (folder / part).symlink_to(shared / part, target_is_directory=True)
    return folder


@pytest.mark.parametrize(("editor", "batch", "workers"), [
    ("rome", 4, "2"), ("r-rome", 4, "0"), ("memit", 3, "0"), ("emmet+mle", 4, "0"), ("alphaedit", 3, "0"), ("ft", 4, "0"),
    ("mend", 4, "0"), ("grace", 4, "0"),
])
@pytest.mark.slow
def test_batched_cases_equal_the_unbatched_run(published: Path, cache_dir: Path, tmp_path: Path, editor: str, batch: int, workers: str):
    base = suite_args(published, tmp_path, "--limit", "1", "--record-only", "--editor", editor.removesuffix("+mle"),
                      *(["--mle"] if editor.endswith("+mle") else []))
    for name, extra in (("plain", []), ("batched", ["--case-batch", str(batch), "-n", workers])):
        # Each run with its own unedited-model scores, so the batched run scores the unedited model itself (in one call
        # per batch); the rest of the cache (statistics, templates, MEND networks) is the session's.
        proc = run_pytest([*base, "--run-name", name, "--cache-dir", str(cache_without_original_scores(cache_dir, tmp_path / f"cache-{name}")),
                           *extra], cache_dir)
        assert proc.returncode == 0, proc.stdout[-2000:]
    plain, batched = records_by_case(tmp_path / "plain"), records_by_case(tmp_path / "batched")
    assert plain.keys() == batched.keys() and len(plain) == 5
    assert {r["split"] for r in plain.values()} == {"coverage", "reverse", "composite", "easy", "hard"}
    for case_id, a in plain.items():
        b = batched[case_id]
        assert a["status"] == b["status"] == "ok" and a["pitfall"] == b["pitfall"], case_id
        for name, value in a["scores"].items():
            if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
                assert b["scores"][name] == pytest.approx(value, rel=1e-4, abs=1e-7), (case_id, name)
        for name, value in a["metrics"].items():  # CM and TFD divide a difference of close scores: absolute, in [-1, 1]
            assert b["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-5), (case_id, name)
    ahead = [r for r in batched.values() if any("--case-batch" in note for note in r["notes"])]
    together = [r for r in batched.values() if any(note.startswith("run together with") for note in r["notes"])]
    if editor in ("ft", "mend", "grace"):  # neither prepare nor compute_updates: one case at a time, and each group's
        # first record says so
        assert not [r for r in ahead if any("worked out the first edits" in note for note in r["notes"])]
        alone = [r for r in batched.values() if any(note.startswith("ran one at a time: editor") for note in r["notes"])]
        assert len(alone) == -(-5 // batch), [r["notes"] for r in batched.values()]
    elif editor.removesuffix("+mle") in TOGETHER:  # every case of a batch runs with the others, second edits included
        assert len(together) == 5, [r["notes"] for r in batched.values()]
        assert all(r["edits"] == plain[r["case_id"]]["edits"] for r in together)
    else:  # one batch of K per worker's group: ceil(5 / K) first cases carry the note
        assert len(ahead) == -(-5 // batch), [r["notes"] for r in ahead]
        assert any("unedited-model facts scored together" in note for r in ahead for note in r["notes"])


def _runner(tiny_loader, cache_dir: Path, published: Path, editor_class: str):
    from editors import make_editor
    from harness.executors.workbench import Workbench
    from harness.guard import ModelGuard
    from pitfalls_benchmark.datasets import load_dataset
    from pitfalls_editkit.contract import EditorSettings
    from pitfalls_editkit.models import reload_weights

    loaded = tiny_loader("tiny-llama")
    dataset = load_dataset(published / "GPT2-XL", limit=2)
    editor = make_editor(f"tests.broken_editors:{editor_class}", loaded, EditorSettings(cache_dir=cache_dir, stats_tokens=5000))
    guard = ModelGuard(loaded.model, reload=lambda: reload_weights(loaded, cache_dir))
    cases = [case for split in dataset.cases.values() for case in split]
    return Workbench.build(editor, dataset, guard), cases, loaded


def test_cases_run_together_on_factors_equal_the_cases_run_one_at_a_time(tiny_loader, cache_dir: Path, published: Path):
    """Every split: an editor's factors, seen per row through hooks, give each case's scores as its written weights do."""
    from harness.executors.lockstep import start_batch
    from harness.executors.single import run_one
    from pitfalls_editkit.fingerprints import parameter_digest

    bench, cases, loaded = _runner(tiny_loader, cache_dir, published, "NudgesInFactors")
    original = parameter_digest(loaded.model)
    alone = {case.case_id: run_one(bench, case) for case in cases}
    start = start_batch(bench, cases)
    assert parameter_digest(loaded.model) == original
    together = {case.case_id: start.take(case.case_id) for case in cases}
    assert {r.split for r in together.values()} == {"coverage", "reverse", "composite", "easy", "hard"}
    for case_id, a in alone.items():
        b = together[case_id]
        assert any(note.startswith(f"run together with the {len(cases)} cases") for note in b.notes), b.notes
        assert a.pitfall == b.pitfall and a.edits == b.edits
        assert b.metrics == pytest.approx(a.metrics, rel=1e-4, abs=1e-6), case_id
        for name, value in a.scores.items():
            if isinstance(value, (float, list)) and name != "true_objects":
                assert b.scores[name] == pytest.approx(value, rel=1e-4, abs=1e-7), (case_id, name)


@pytest.mark.parametrize(("broken", "expected"), [
    ("ChangesInComputeUpdates", "editor 'changes-in-compute-updates' changed the model in compute_updates(), which must not: "
                                "model.layers.0.mlp.down_proj.weight"),
    ("RaisesInComputeUpdates", "editor 'raises-in-compute-updates' raised RuntimeError in compute_updates() for 10 cases "
                               "(--case-batch): injected failure"),
    ("UndeclaredFactors", "editor 'undeclared-factors' raised ValueError in compute_updates() for 10 cases (--case-batch): "
                          "editor 'undeclared-factors': compute_updates() changes model.layers.0.mlp.up_proj.weight, which it does "
                          "not declare"),
])
def test_a_batch_whose_factors_break_the_contract_runs_one_case_at_a_time(tiny_loader, cache_dir: Path, published: Path, broken: str,
                                                                          expected: str):
    from harness.executors.lockstep import start_batch
    from harness.executors.single import run_one
    from pitfalls_editkit.fingerprints import parameter_digest

    bench, cases, loaded = _runner(tiny_loader, cache_dir, published, broken)
    original = parameter_digest(loaded.model)
    start = start_batch(bench, cases)
    assert parameter_digest(loaded.model) == original
    assert all(start.take(case.case_id) is None for case in cases)
    first = run_one(bench, cases[0], ahead=start.take_ahead())
    assert first.status == "ok" and f"ran one at a time instead of together: {expected}" in first.notes[-1], first.notes
    assert start.take_ahead() is None  # counted once
    assert all(not note.startswith("run together") for case in cases[1:] for note in run_one(bench, case).notes)
