"""--case-batch K: the first edits of K cases worked out together give the results of the unbatched run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def records(folder: Path) -> dict[str, dict]:
    return {r["case_id"]: r for r in map(json.loads, (folder / "cases.jsonl").read_text().splitlines())}


@pytest.mark.parametrize(("editor", "batch", "workers"), [("rome", 4, "2"), ("memit", 3, "0"), ("ft", 4, "0")])
def test_batched_cases_equal_the_unbatched_run(published: Path, cache_dir: Path, tmp_path: Path, editor: str, batch: int, workers: str):
    env = {**os.environ, "PITFALLS_CACHE_DIR": str(cache_dir)}
    base = [sys.executable, "-m", "pytest", "suites/", "-p", "no:cacheprovider", "--model", "tiny-gpt2", "--dataset-dir",
            str(published / "GPT2-XL"), "--limit", "2", "--record-only", "--stats-tokens", "5000", "--results-dir", str(tmp_path),
            "--editor", editor]
    for name, extra in (("plain", []), ("batched", ["--case-batch", str(batch), "-n", workers])):
        # Each run with its own cache, so the batched run scores the unedited model itself (in one call per batch).
        proc = subprocess.run([*base, "--run-name", name, "--cache-dir", str(tmp_path / f"cache-{name}"), *extra], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:]
    plain, batched = records(tmp_path / "plain"), records(tmp_path / "batched")
    assert plain.keys() == batched.keys() and len(plain) == 10
    assert {r["split"] for r in plain.values()} == {"coverage", "reverse", "composite", "easy", "hard"}
    for case_id, a in plain.items():
        b = batched[case_id]
        assert a["status"] == b["status"] == "ok" and a["pitfall"] == b["pitfall"], case_id
        for name, value in a["metrics"].items():
            assert b["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), (case_id, name)
        for name, value in a["scores"].items():
            if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
                assert b["scores"][name] == pytest.approx(value, rel=1e-4, abs=1e-7), (case_id, name)
    ahead = [r for r in batched.values() if any("--case-batch" in note for note in r["notes"])]
    if editor == "ft":  # no Editor.prepare: nothing is worked out ahead
        assert not ahead
    else:  # one batch of K per worker's group: ceil(10 / K) first cases carry the note
        assert len(ahead) == -(-10 // batch), [r["notes"] for r in ahead]
        assert any("unedited-model facts scored together" in note for r in ahead for note in r["notes"])
