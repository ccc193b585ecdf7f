"""The conflict pre-check: every published ConflictEdit case is flagged, no RoundEdit case; the command's output and status."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pitfalls_benchmark.datasets import load_dataset
from pitfalls_benchmark.splits import SPLITS
from pitfalls_editkit.facts import Edit, Entity, Fact, Relation
from pitfalls_generator.precheck import case_batch, find_conflicts, read_rules
from pitfalls_generator.schema import parse_rules
from tests.helpers import REPO

CAPITAL = Relation("P36", "The capital of {} is", "", "capital")
CAPITAL_OF = Relation("P1376", "{} is the capital of", "", "capital of")
FRANCE, PARIS, LYON, NICE = (Entity(i, label) for i, label in (("Q142", "France"), ("Q90", "Paris"), ("Q456", "Lyon"), ("Q33959", "Nice")))
RULES = parse_rules({"coverage": ["P36"], "reverse": ["P36>P1376"]}, "test")


@pytest.mark.parametrize("folder", ["GPT2-XL", "GPT-J"])
def test_every_published_conflict_case_is_flagged_and_no_round_case(published, folder):
    rules = read_rules(published / folder)
    dataset = load_dataset(published / folder)
    for split, cases in dataset.cases.items():
        for case in cases:
            _, edits, facts = case_batch(case)
            kinds = {f.kind for f in find_conflicts(edits, rules, facts) if f.conflict}
            if SPLITS[split].benchmark == "conflict":
                assert split in kinds, case.case_id
            else:
                assert not kinds, case.case_id


def test_the_three_kinds_and_stale_facts():
    coverage = find_conflicts([Edit(FRANCE, CAPITAL, PARIS, LYON), Edit(FRANCE, CAPITAL, PARIS, NICE)], RULES)
    assert [f.kind for f in coverage] == ["coverage"] and coverage[0].edits == (0, 1)
    reverse = find_conflicts([Edit(FRANCE, CAPITAL, PARIS, LYON), Edit(LYON, CAPITAL_OF, FRANCE, Entity("Q183", "Germany"))], RULES)
    assert [f.kind for f in reverse] == ["reverse"] and "implies (Lyon, P1376, France)" in reverse[0].why
    agree = find_conflicts([Edit(FRANCE, CAPITAL, PARIS, LYON), Edit(LYON, CAPITAL_OF, Entity("Q1", "x"), FRANCE)], RULES)
    assert agree == []  # the second edit states what the first implies
    stale = find_conflicts([Edit(FRANCE, CAPITAL, PARIS, LYON)], RULES, facts=[Fact(PARIS, CAPITAL_OF, FRANCE)])
    assert [f.kind for f in stale] == ["stale"] and not stale[0].conflict and "(Paris, P1376, France)" in stale[0].why


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pitfalls_generator.precheck", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def edit_line(edit: Edit) -> str:
    relation = {"id": edit.relation.id, "prompt": edit.relation.prompt}
    entity = lambda e: {"id": e.id, "label": e.label}  # noqa: E731
    return json.dumps({"subject": entity(edit.subject), "relation": relation, "object": entity(edit.object),
                       "new_object": entity(edit.new_object)}) + "\n"


def test_the_command_exits_1_on_a_conflict_and_writes_json(tmp_path, published):
    (tmp_path / "rules.json").write_text(json.dumps({"coverage": ["P36"], "reverse": ["P36>P1376"]}))
    (tmp_path / "batch.jsonl").write_text(edit_line(Edit(FRANCE, CAPITAL, PARIS, LYON)) + edit_line(Edit(FRANCE, CAPITAL, PARIS, NICE)))
    proc = run([str(tmp_path / "batch.jsonl"), "--rules", str(tmp_path / "rules.json"), "--json", str(tmp_path / "out.json")])
    assert proc.returncode == 1 and "1 conflict(s) in 1 of 1 batch(es)" in proc.stdout
    findings = json.loads((tmp_path / "out.json").read_text())["findings"]
    assert findings[0]["kind"] == "coverage" and findings[0]["conflict"] is True
    (tmp_path / "fine.jsonl").write_text(edit_line(Edit(FRANCE, CAPITAL, PARIS, LYON)))
    assert run([str(tmp_path / "fine.jsonl"), "--rules", str(tmp_path / "rules.json")]).returncode == 0
    cases = json.loads((published / "GPT2-XL" / "reverse_edit.json").read_text())[:3]
    (tmp_path / "reverse_edit.json").write_text(json.dumps(cases))
    proc = run([str(tmp_path / "reverse_edit.json"), "--rules", str(published / "GPT2-XL")])
    assert proc.returncode == 1 and "3 conflict(s) in 3 of 3 batch(es)" in proc.stdout
    bad = run([str(tmp_path / "fine.jsonl"), "--rules", str(tmp_path / "nope.json")])
    assert bad.returncode == 2 and bad.stderr.strip().endswith("no such file or folder") and "Traceback" not in bad.stderr


def test_the_suites_run_the_precheck_only_when_asked(published, cache_dir):
    base = [sys.executable, "-m", "pytest", "suites/", "-p", "no:cacheprovider", "--dataset-dir", str(published / "GPT2-XL"),
            "--limit", "3"]
    proc = subprocess.run([*base, "-m", "precheck", "-q"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "15 passed" in proc.stdout, proc.stdout[-2000:]
    listed = subprocess.run([*base, "--collect-only", "-q"], cwd=REPO, capture_output=True, text=True, timeout=300).stdout
    assert "test_precheck" not in listed and "test_round_edit" in listed
