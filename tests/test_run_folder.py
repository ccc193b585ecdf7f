"""A run folder continued by a later session: refused before any case runs when it holds another run, by what that run
asked for or by what it used; an editor's error reads once in the failure text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import REPO, Ran, run_pytest, suite_args
from tests.helpers import records as lines

FT_HPARAMS = REPO / "editors" / "hparams" / "ft" / "tiny-llama.json"

pytestmark = pytest.mark.slow  # whole runs of the suites, several per test: the full loop, not the quick one


def suite_command(published: Path, results: Path, run_name: str, *extra: str) -> list[str]:
    return suite_args(published, results, "--record-only", *extra, model="tiny-llama", run_name=run_name)


def run(command: list[str], cache_dir: Path) -> Ran:
    return run_pytest(command, cache_dir)


def test_a_hyper_parameter_file_edited_in_place_is_refused_and_nothing_mixes(published, cache_dir, tmp_path):
    hparams = tmp_path / "ft.json"
    hparams.write_text(FT_HPARAMS.read_text(encoding="utf-8"), encoding="utf-8")
    command = suite_command(published, tmp_path, "ft", "--editor", "ft", "--hparams", str(hparams), "-m", "easy", "--limit", "1")
    first = run(command, cache_dir)
    assert first.returncode == 0, first.stdout[-2000:]
    folder = tmp_path / "ft"
    run_json, cases = (folder / "run.json").read_text(encoding="utf-8"), lines(folder / "cases.jsonl")
    values = json.loads(hparams.read_text(encoding="utf-8"))
    hparams.write_text(json.dumps({**values, "lr": 0.02}), encoding="utf-8")  # the same options, another file content
    second = run(command, cache_dir)
    output = second.stdout + second.stderr
    assert second.returncode == 4, output[-2000:]
    assert f"{folder}: holds a run that used hparams.lr=0.01, this one uses hparams.lr=0.02" in output, output[-2000:]
    assert "Traceback" not in output and " passed" not in output
    assert lines(folder / "cases.jsonl") == cases and (folder / "run.json").read_text(encoding="utf-8") == run_json
    hparams.write_text(json.dumps(values), encoding="utf-8")  # put back: the run continues in its folder
    third = run(command, cache_dir)
    assert third.returncode == 0 and len(lines(folder / "cases.jsonl")) == 2, third.stdout[-2000:]


def test_a_run_refused_for_its_options_runs_no_item(published, cache_dir, tmp_path):
    first = run(suite_command(published, tmp_path, "old", "--editor", "tests.broken_editors:Fine", "-m", "easy", "--limit", "1"),
                cache_dir)
    assert first.returncode == 0, first.stdout[-2000:]
    cases = (tmp_path / "old" / "cases.jsonl").read_text(encoding="utf-8")
    proc = run(suite_command(published, tmp_path, "old", "--editor", "tests.broken_editors:Sleeper", "-m", "easy", "--limit", "1"),
               cache_dir)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 4, output[-2000:]
    assert "holds a run with editor='tests.broken_editors:Fine', this one has editor='tests.broken_editors:Sleeper'" in output
    assert " passed" not in output and " failed" not in output and "Traceback" not in output
    assert (tmp_path / "old" / "cases.jsonl").read_text(encoding="utf-8") == cases


def test_an_editor_error_reads_once_in_the_failure_text(published, cache_dir, tmp_path):
    proc = run(suite_command(published, tmp_path, "raises", "--editor", "tests.broken_editors:RaisesMidEdit", "-m", "easy",
                             "--limit", "1", "-n", "2"), cache_dir)
    output = proc.stdout + proc.stderr
    message = "editor 'raises-mid-edit' raised FloatingPointError during"
    failure_text = output.split("= FAILURES =", 1)[1].split("\n=", 1)[0]  # the item's failure, not the summary lines
    assert proc.returncode == 1 and failure_text.count(message) == 1, output[-3000:]
    assert "During handling of the above exception" not in output and "direct cause" not in output
    assert [r["status"] for r in lines(tmp_path / "raises" / "cases.jsonl")] == ["error"]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_resumed_record_that_is_not_finished_runs_again_and_is_said(published, cache_dir, tmp_path, workers):
    """A line whose metric is NaN is no finished case: --resume says so (with workers too) and runs its case again;
    a record of a case outside the selection stays in the file and is not counted."""
    command = suite_command(published, tmp_path, "r", "--editor", "tests.broken_editors:Fine", "-m", "easy or reverse",
                            "--limit", "1", "-n", workers)
    assert run(command, cache_dir).returncode == 0
    log = tmp_path / "r" / "cases.jsonl"
    first = lines(log)
    broken = {**first[0], "metrics": {name: float("nan") for name in first[0]["metrics"]}}
    foreign = {**first[1], "case_id": first[1]["case_id"].replace("-0000-", "-0099-")}
    log.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in (broken, first[1], foreign)))
    resumed = run([*command, "--resume"], cache_dir)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert f"resume: {log}: 1 line(s) are not finished records and were left out (line 1: metrics." in resumed.output
    assert "record(s) of cases outside the run's selection" in resumed.output, resumed.output[-3000:]
    assert "cases already recorded in" in resumed.output, resumed.output[-3000:]  # said with workers too
    after = lines(log)
    assert len(after) == 4 and after[-1]["case_id"] == first[0]["case_id"] and after[-1]["status"] == "ok"
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())["splits"]
    assert sum(split["n"] for split in summary.values()) == 2  # the two selected cases, not the foreign record
