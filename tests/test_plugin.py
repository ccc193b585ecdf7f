"""The pytest plugin as a user meets it: items, -k/-m, -n 2, live results, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, records, run_pytest  # noqa: F401 (imported from here by older test modules)


@pytest.fixture(scope="module")
def tiny_run(published: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One recorded run over the first case of every split on tiny-gpt2."""
    results = tmp_path_factory.mktemp("results")
    proc = run_pytest(["suites/", "--model", "tiny-gpt2", "--dataset-dir", str(published / "GPT2-XL"), "--limit", "1",
                       "--results-dir", str(results), "--run-name", "tiny", "--stats-tokens", "5000"], cache_dir)
    return proc, results / "tiny"


def test_each_case_is_an_item_with_its_record(tiny_run):
    proc, run_dir = tiny_run
    lines = records(run_dir / "cases.jsonl")
    assert sorted(r["split"] for r in lines) == ["composite", "coverage", "easy", "hard", "reverse"], proc.stdout[-3000:]
    config = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))  # the configuration, once per run
    assert config["model"] == "tiny-gpt2" and config["editor"] == "rome"
    assert config["hparams"]["layers"] == [0] and "torch" in config["versions"]
    for line in lines:
        assert line["status"] == "ok" and "config" not in line
        assert line["seconds_edit"] > 0 and line["seconds_eval"] > 0
        assert line["scores"] and all(v == v for v in line["metrics"].values())
    round_line = next(r for r in lines if r["split"] == "easy")
    assert len(round_line["scores"]["m0_true"]) == len(round_line["scores"]["true_objects"]) >= 2


def test_pitfalls_fail_items_with_the_metric_and_scores(tiny_run):
    proc, run_dir = tiny_run
    lines = records(run_dir / "cases.jsonl")
    failing = [r for r in lines if r["pitfall"]]
    assert proc.returncode == (1 if failing else 0)
    for record in failing:
        assert record["pitfall_message"].split(":")[0] == f"{record['split']} pitfall"
        assert record["pitfall_message"] in proc.stdout  # the failure message names metric and scores
        assert f"test_{'conflict' if record['benchmark'] == 'conflict' else 'round'}_edit[{record['case_id']}]" in proc.stdout


def test_summary_has_every_metric_of_every_split_and_the_table(tiny_run):
    proc, run_dir = tiny_run
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = {"coverage": {"Succ", "CS_exp", "CM"}, "reverse": {"CS_exp", "CS_imp", "CM"},
                "composite": {"CS_exp", "CS_imp", "CM", "TFD"}, "easy": {"Succ", "D", "JS", "IR", "FR"},
                "hard": {"Succ", "D", "JS", "IR", "FR"}}
    assert {split: set(info["metrics"]) for split, info in summary["splits"].items()} == expected
    assert all(cell["n"] == 1 for info in summary["splits"].values() for cell in info["metrics"].values())
    assert summary["config"]["model_fingerprint"] and summary["config"]["seed"] == 0
    for column in ("Single Succ", "Reverse CS_imp", "Composite TFD", "Easy IR", "Hard FR"):
        assert column in proc.stdout


def test_every_run_renders_its_report_and_records_its_selection(tiny_run):
    proc, run_dir = tiny_run
    assert f"report: {run_dir / 'report.html'}" in proc.stdout
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Every case" in html and all(f">{split}<" in html for split in ("coverage", "reverse", "composite", "easy", "hard"))
    assert json.loads((run_dir / "selection.json").read_text())["expected"] == {s: 1 for s in ("coverage", "reverse", "composite", "easy", "hard")}
    assert "is incomplete" not in html


def test_k_and_m_select_cases(published: Path, cache_dir: Path):
    base = ["suites/", "--model", "tiny-gpt2", "--dataset-dir", str(published / "GPT2-XL"), "--limit", "3", "--collect-only", "-q"]
    by_k = run_pytest([*base, "-k", "reverse"], cache_dir).stdout
    ids = [ln for ln in by_k.splitlines() if "::" in ln]
    assert len(ids) == 3 and all("[reverse-" in ln for ln in ids)
    by_m = run_pytest([*base, "-m", "round"], cache_dir).stdout
    ids = [ln for ln in by_m.splitlines() if "::" in ln]
    assert len(ids) == 6 and all("[easy-" in ln or "[hard-" in ln for ln in ids)
    by_rule = run_pytest([*base, "-k", "P800-P170"], cache_dir).stdout
    assert [ln for ln in by_rule.splitlines() if "::" in ln] and all("P800-P170" in ln for ln in by_rule.splitlines() if "::" in ln)


@pytest.mark.slow
def test_without_dataset_dir_the_generated_geography_dataset_runs(cache_dir: Path, tmp_path: Path):
    proc = run_pytest(["suites/", "--model", "tiny-gpt2", "--limit", "1", "--results-dir", str(tmp_path), "--run-name", "geo",
                       "--stats-tokens", "5000", "--record-only", "-n", "2"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    done = records(tmp_path / "geo" / "cases.jsonl")
    assert sorted(r["split"] for r in done) == ["composite", "coverage", "easy", "hard", "reverse"]
    summary = json.loads((tmp_path / "geo" / "summary.json").read_text(encoding="utf-8"))
    assert "geography" in summary["config"]["dataset_dir"]
    selection = json.loads((tmp_path / "geo" / "selection.json").read_text())  # written by the controller under -n 2
    assert selection["expected"] == {s: 1 for s in ("coverage", "reverse", "composite", "easy", "hard")}
    assert any(r["case_id"].startswith("easy-0000-P47-") or r["case_id"].startswith("easy-0000-P37-") for r in done)


@pytest.mark.slow
def test_two_workers_give_the_same_numbers(tiny_run, published: Path, cache_dir: Path, tmp_path: Path):
    _, run_dir = tiny_run
    proc = run_pytest(["suites/", "--model", "tiny-gpt2", "--dataset-dir", str(published / "GPT2-XL"), "--limit", "1",
                       "--results-dir", str(tmp_path), "--run-name", "xdist", "--stats-tokens", "5000", "-n", "2"], cache_dir)
    serial = {r["case_id"]: r for r in records(run_dir / "cases.jsonl")}
    parallel = {r["case_id"]: r for r in records(tmp_path / "xdist" / "cases.jsonl")}
    assert set(serial) == set(parallel), proc.stdout[-2000:]
    for case_id, record in serial.items():
        assert parallel[case_id]["scores"] == record["scores"], case_id
        assert parallel[case_id]["metrics"] == record["metrics"], case_id
    assert (tmp_path / "xdist" / "summary.json").exists()


def test_broken_dataset_is_one_error_line(published: Path, cache_dir: Path, tmp_path: Path):
    for name in ("conflict_prompts.json", "round_prompts.json"):
        (tmp_path / name).write_text((published / "GPT2-XL" / name).read_text())
    (tmp_path / "hard.json").write_text('[{"type": "1-2@P69", "edit": {}}]')
    proc = run_pytest(["suites/", "--model", "tiny-gpt2", "--dataset-dir", str(tmp_path)], cache_dir)
    assert proc.returncode != 0
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("ERROR")]
    assert errors == [f"ERROR: {tmp_path / 'hard.json'}: record 0: missing 'edit.subject'"]


def test_unknown_editor_and_model_are_one_line(published: Path, cache_dir: Path, tmp_path: Path):
    proc = run_pytest(["suites/", "--editor", "romeo", "--dataset-dir", str(published / "GPT2-XL")], cache_dir)
    assert proc.returncode != 0 and "ERROR: --editor 'romeo': unknown editor (known: alphaedit, emmet, ft, grace, ike, lora, memit, mend, r-rome, rome, wise; " in proc.output
    proc = run_pytest(["suites/", "--model", str(tmp_path), "--dataset-dir", str(published / "GPT2-XL"), "--limit", "2",
                       "--results-dir", str(tmp_path / "r")], cache_dir)
    assert proc.returncode != 0
    # A run-wide error stops the run at its first item: one line, not one per case (10 selected here).
    said = [line for line in proc.stdout.splitlines() if line.startswith(f"--model {tmp_path}: folder has no config.json")]
    assert len(said) == 1 and proc.returncode == 1 and proc.stdout.count("ERROR at setup") == 1, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout
    proc = run_pytest(["suites/", "--editor", "tests.broken_editors:ConstructorRaises", "--model", "tiny-gpt2", "--dataset-dir",
                       str(published / "GPT2-XL"), "--limit", "2", "--results-dir", str(tmp_path / "r")], cache_dir)
    assert proc.returncode == 1 and proc.stdout.count("ERROR at setup") == 1, proc.stdout[-3000:]
    assert "could not be built: RuntimeError: injected failure in the constructor" in proc.stdout
    short = tmp_path / "short.txt"  # a general-ability measure that cannot be built stops the run the same way
    short.write_text("Far fewer words than one window holds.\n")
    proc = run_pytest(["suites/", "--model", "tiny-gpt2", "--dataset-dir", str(published / "GPT2-XL"), "--limit", "2",
                       "--general-ability", f"perplexity:{short}", "--results-dir", str(tmp_path / "r3")], cache_dir)
    assert proc.returncode == 1 and proc.stdout.count("ERROR at setup") == 1, proc.stdout[-3000:]
    assert "fewer than one window" in proc.stdout and "Traceback" not in proc.stdout


@pytest.mark.slow
def test_a_run_wide_error_under_workers_is_one_line_per_worker(published: Path, cache_dir: Path, tmp_path: Path):
    """Under -n 2 each worker stops at its first item; xdist calls that an interruption, the run still exits 1."""
    proc = run_pytest(["suites/", "--model", str(tmp_path), "--dataset-dir", str(published / "GPT2-XL"), "--limit", "2",
                       "-n", "2", "--results-dir", str(tmp_path / "r2")], cache_dir)
    assert proc.returncode == 1 and proc.stdout.count("ERROR at setup") <= 2, proc.stdout[-3000:]
    assert f"--model {tmp_path}: folder has no config.json" in proc.stdout and "Traceback" not in proc.stdout


@pytest.mark.slow
def test_interrupted_run_keeps_finished_cases(published: Path, cache_dir: Path, tmp_path: Path):
    env = {**os.environ, "PITFALLS_CACHE_DIR": str(cache_dir)}
    cmd = [sys.executable, "-m", "pytest", "suites/", "--model", "tiny-gpt2", "--dataset-dir", str(published / "GPT2-XL"),
           "--limit", "50", "-m", "round", "--record-only", "--results-dir", str(tmp_path), "--run-name", "cut", "--stats-tokens", "5000"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "cut" / "cases.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = records(log)
    assert 3 <= len(kept) < 100
    assert all(r["status"] == "ok" and r["metrics"] for r in kept)
