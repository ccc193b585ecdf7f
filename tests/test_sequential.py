"""Sequential (lifelong) mode: a chain of accumulating edits is deterministic, survives a failed edit, and ends on
the original model bit for bit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from editors import make_editor
from harness.executors.chained import ChainRun, run_on_chain, start_chain
from harness.executors.workbench import Workbench
from harness.guard import EditFailure
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.fingerprints import parameter_digest
from tests.broken_editors import DECLARED
from tests.helpers import records, run_pytest


def chain_runner(editor, dataset, cases=(), restart_every=None) -> tuple[Workbench, ChainRun]:
    bench = Workbench.build(editor, dataset)
    return bench, start_chain(bench, "chain-1-of-1", cases, restart_every, retention_every=2, retention_sample=5)


def test_edits_accumulate_and_the_chain_ends_on_the_original_model(tiny_loader, cache_dir, published):
    loaded = tiny_loader("tiny-llama")
    dataset = load_dataset(published / "GPT2-XL", splits=("easy", "reverse"), limit=2)
    cases = dataset.cases["easy"] + dataset.cases["reverse"]
    digest = parameter_digest(loaded.model)
    bench, chain = chain_runner(make_editor("rome", loaded, EditorSettings(cache_dir=cache_dir, stats_tokens=5000)), dataset, cases)
    positions, weights = [], []
    for case in cases:
        record = run_on_chain(bench, chain, case)
        positions.append(record.chain_position)
        weights.append(loaded.model.get_parameter("model.layers.0.mlp.down_proj.weight").detach().clone())
        if record.benchmark == "round":
            assert set(record.original_metrics) == {"IR", "FR", "D"}
    assert positions == [0, 2, 4, 6]  # each case's two edits stay on the model
    assert not torch.equal(weights[0], weights[-1]) and parameter_digest(loaded.model) != digest
    assert chain.chain.restore() is None
    assert parameter_digest(loaded.model) == digest


def test_a_failed_edit_is_rolled_back_and_the_chain_goes_on(tiny_loader, cache_dir, published):
    loaded = tiny_loader("tiny-llama")
    dataset = load_dataset(published / "GPT2-XL", splits=("easy",), limit=3)
    editor = make_editor("tests.broken_editors:FailsThirdEdit", loaded, EditorSettings(cache_dir=cache_dir))
    bench, chain = chain_runner(editor, dataset)
    digest = parameter_digest(loaded.model)
    weight = loaded.model.get_parameter(DECLARED)
    first = run_on_chain(bench, chain, dataset.cases["easy"][0])  # edits 1 and 2
    after_first = weight.detach().clone()
    try:
        run_on_chain(bench, chain, dataset.cases["easy"][1])  # edit 3 fails after writing
        raise AssertionError("the third edit should have failed")
    except EditFailure as failure:
        assert "injected failure on the third edit" in str(failure)
    assert torch.equal(weight, after_first)  # the chain is as it was before the failed edit
    third = run_on_chain(bench, chain, dataset.cases["easy"][2])
    assert first.chain_position == 0 and third.chain_position == 2 and third.status == "ok"
    assert not torch.equal(weight, after_first)
    chain.chain.restore()
    assert parameter_digest(loaded.model) == digest


def run_sequential(published: Path, cache_dir: Path, results: Path, name: str, workers: int) -> list[dict]:
    proc = run_pytest(["suites/", "--editor", "rome", "--model", "tiny-llama", "--dataset-dir", str(published / "GPT2-XL"),
                       "--limit", "1", "--record-only", "--stats-tokens", "5000", "--sequential", "--retention-every", "2",
                       "--results-dir", str(results), "--run-name", name, "-n", str(workers)], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return records(results / name / "cases.jsonl")


def per_chain(lines: list[dict]) -> dict[str, list[tuple]]:
    chains: dict[str, list[tuple]] = {}
    for r in lines:
        chains.setdefault(r["chain"], []).append((r["chain_position"], r["case_id"], json.dumps(r["metrics"], sort_keys=True),
                                                  json.dumps(r["retention"], sort_keys=True)))
    return {chain: sorted(rows) for chain, rows in chains.items()}


@pytest.mark.slow
def test_sequential_runs_are_deterministic_with_and_without_workers(published, cache_dir, tmp_path):
    one = run_sequential(published, cache_dir, tmp_path, "one", 0)
    again = run_sequential(published, cache_dir, tmp_path, "again", 0)
    assert per_chain(one) == per_chain(again) and set(per_chain(one)) == {"chain-1-of-1"}
    assert sorted(r["chain_position"] for r in one) == list(range(0, 2 * len(one), 2))
    two = run_sequential(published, cache_dir, tmp_path, "two", 2)
    two_again = run_sequential(published, cache_dir, tmp_path, "two-again", 2)
    assert set(per_chain(two)) == {"chain-1-of-2", "chain-2-of-2"}
    assert per_chain(two) == per_chain(two_again)  # the same cases, order and numbers per chain, whatever the timing
    assert {r["worker"] for r in two} == {"gw0", "gw1"}
    assert {r["threads"] for r in two} == {max(1, (os.cpu_count() or 1) // 2)}  # the cores shared between the workers
    assert any(r["retention"] for r in one)
    config = json.loads((tmp_path / "two" / "run.json").read_text())
    assert config["sequential"] == 0 and any("sequential" in d for d in config["paper_setting_differs"])


@pytest.mark.slow
def test_chains_are_dealt_from_the_selected_cases(published, cache_dir, tmp_path):
    """-k / -m select first, then the cases are dealt into chains: two workers get two chains of equal length."""
    proc = run_pytest(["suites/", "--editor", "tests.broken_editors:Fine", "--model", "tiny-llama", "--dataset-dir",
                       str(published / "GPT2-XL"), "--limit", "4", "-k", "easy or hard", "--record-only", "--sequential",
                       "--results-dir", str(tmp_path), "--run-name", "k", "-n", "2"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    lines = records(tmp_path / "k" / "cases.jsonl")
    assert {r["split"] for r in lines} == {"easy", "hard"}
    chains = per_chain(lines)
    assert sorted(len(rows) for rows in chains.values()) == [4, 4]
    assert all([row[0] for row in rows] == [0, 2, 4, 6] for rows in chains.values())  # a round trip is two edits


def test_a_segment_restart_comes_before_the_next_case_scores_its_m0(tiny_loader, cache_dir, published):
    """--sequential 1: every case starts on the original model, so its M0 is the original model's."""
    loaded = tiny_loader("tiny-llama")
    dataset = load_dataset(published / "GPT2-XL", splits=("easy",), limit=3)
    bench, chain = chain_runner(make_editor("rome", loaded, EditorSettings(cache_dir=cache_dir, stats_tokens=5000)), dataset,
                                dataset.cases["easy"], restart_every=1)
    records_ = [run_on_chain(bench, chain, case) for case in dataset.cases["easy"]]
    assert [r.chain_position for r in records_] == [0, 0, 0] and [r.chain_segment for r in records_] == [0, 1, 2]
    for record in records_:
        assert record.scores["m0_true"] == record.scores["m0_original_true"]


def test_a_chains_coverage_record_without_succ_is_a_finished_record_and_a_fresh_one_is_not(tmp_path):
    from harness.run_files import read_cases

    record = {"case_id": "coverage-0000-P17-x", "benchmark": "conflict", "split": "coverage", "index": 0, "group": "P17",
              "status": "ok", "seed": 1, "metrics": {"CS_exp": 1.0, "CM": 0.5}, "pitfall": False}
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps({**record, "chain": "chain-1-of-1", "chain_position": 0, "chain_segment": 0}) + "\n"
                    + json.dumps({**record, "case_id": "coverage-0001-P17-y", "index": 1}) + "\n", encoding="utf-8")
    lines = read_cases(path)
    assert [r.case_id for r in lines.records] == ["coverage-0000-P17-x"]  # Succ is not measured on a chain
    assert lines.left_out == [(2, "status ok without metric Succ")]
