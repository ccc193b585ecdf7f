"""Deterministic shards (--shard K/N) and their merge: the same summary as the unsplit run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.plugin.collection import shard_of
from tests.helpers import Ran, run_inprocess, run_pytest, suite_args


def test_a_case_belongs_to_one_shard_whatever_the_order():
    ids = [f"easy-{i:04d}-P47-x" for i in range(300)]
    shards = [shard_of(case_id, 3) for case_id in ids]
    assert shards == [shard_of(case_id, 3) for case_id in reversed(ids)][::-1]
    assert set(shards) == {1, 2, 3} and min(shards.count(k) for k in (1, 2, 3)) > 60


@pytest.mark.slow
def test_three_shards_merged_give_the_unsplit_summary(published: Path, cache_dir: Path, tmp_path: Path):
    # The mechanics of shards, merge and resume, with an editor that costs nothing (tests.broken_editors:Fine).
    base = suite_args(published, tmp_path, "--limit", "2", "--record-only", "--editor", "tests.broken_editors:Fine", model="tiny-llama")

    def run(*extra: str) -> None:
        proc = run_pytest([*base, *extra], cache_dir)
        assert proc.returncode == 0, proc.stdout[-2000:]

    run("--run-name", "whole")
    for k in (1, 2, 3):
        run("--run-name", f"shard{k}", "--shard", f"{k}/3")
    counts = [len((tmp_path / f"shard{k}" / "cases.jsonl").read_text().splitlines()) for k in (1, 2, 3)]
    assert sum(counts) == 10 and all(counts)

    def merge(out: str, *shards: str) -> Ran:
        return run_inprocess("reports", ["merge", str(tmp_path / out), *(str(tmp_path / s) for s in shards)], cache_dir)

    merged = merge("merged", "shard1", "shard2", "shard3")
    assert merged.returncode == 0 and "merged 10 cases" in merged.stdout, merged.output
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())["splits"]
    assert json.loads((tmp_path / "merged" / "summary.json").read_text())["splits"] == whole
    assert (tmp_path / "merged" / "report.html").is_file()
    partial = merge("partial", "shard1", "shard3", "shard1")
    assert partial.returncode == 0 and "missing shards: 2/3" in partial.stdout
    refused = merge("mixed", "shard1", "whole")
    assert refused.returncode == 2 and "error:" in refused.output and "Traceback" not in refused.output

    # --resume: a run cut short (here: only two splits ran) goes on where it stopped and ends as the whole run.
    run("--run-name", "resumed", "-k", "coverage or easy")
    first = len((tmp_path / "resumed" / "cases.jsonl").read_text().splitlines())
    proc = run_pytest([*base, "--run-name", "resumed", "--resume"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert f"resume: {first} cases already recorded" in proc.stdout and f"{10 - first} to run" in proc.stdout
    lines = (tmp_path / "resumed" / "cases.jsonl").read_text().splitlines()
    assert len(lines) == 10 and len({json.loads(line)["case_id"] for line in lines}) == 10
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["splits"] == whole
