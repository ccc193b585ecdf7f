"""Deterministic shards (--shard K/N) and their merge: the same summary as the unsplit run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.plugin.collection import shard_of

REPO = Path(__file__).resolve().parents[1]


def test_a_case_belongs_to_one_shard_whatever_the_order():
    ids = [f"easy-{i:04d}-P47-x" for i in range(300)]
    shards = [shard_of(case_id, 3) for case_id in ids]
    assert shards == [shard_of(case_id, 3) for case_id in reversed(ids)][::-1]
    assert set(shards) == {1, 2, 3} and min(shards.count(k) for k in (1, 2, 3)) > 60


def test_three_shards_merged_give_the_unsplit_summary(published: Path, cache_dir: Path, tmp_path: Path):
    env = {**os.environ, "PITFALLS_CACHE_DIR": str(cache_dir)}
    base = [sys.executable, "-m", "pytest", "suites/", "-p", "no:cacheprovider", "--model", "tiny-gpt2", "--dataset-dir",
            str(published / "GPT2-XL"), "--limit", "2", "--record-only", "--stats-tokens", "5000", "--results-dir", str(tmp_path)]

    def run(*extra: str) -> None:
        proc = subprocess.run([*base, *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:]

    run("--run-name", "whole")
    for k in (1, 2, 3):
        run("--run-name", f"shard{k}", "--shard", f"{k}/3")
    counts = [len((tmp_path / f"shard{k}" / "cases.jsonl").read_text().splitlines()) for k in (1, 2, 3)]
    assert sum(counts) == 10 and all(counts)

    def merge(out: str, *shards: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reports", "merge", str(tmp_path / out), *(str(tmp_path / s) for s in shards)],
                              cwd=REPO, capture_output=True, text=True, timeout=300)

    merged = merge("merged", "shard1", "shard2", "shard3")
    assert merged.returncode == 0 and "merged 10 cases" in merged.stdout, merged.stderr
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())["splits"]
    assert json.loads((tmp_path / "merged" / "summary.json").read_text())["splits"] == whole
    assert (tmp_path / "merged" / "report.html").is_file()
    partial = merge("partial", "shard1", "shard3", "shard1")
    assert partial.returncode == 0 and "missing shards: 2/3" in partial.stdout
    refused = merge("mixed", "shard1", "whole")
    assert refused.returncode == 2 and "error:" in refused.stderr and "Traceback" not in refused.stderr

    # --resume: a run cut short (here: only two splits ran) goes on where it stopped and ends as the whole run.
    run("--run-name", "resumed", "-k", "coverage or easy")
    first = len((tmp_path / "resumed" / "cases.jsonl").read_text().splitlines())
    proc = subprocess.run([*base, "--run-name", "resumed", "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert f"resume: {first} cases already recorded" in proc.stdout and f"{10 - first} to run" in proc.stdout
    lines = (tmp_path / "resumed" / "cases.jsonl").read_text().splitlines()
    assert len(lines) == 10 and len({json.loads(line)["case_id"] for line in lines}) == 10
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["splits"] == whole
