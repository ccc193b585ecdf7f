"""The loader reads the published data and reports broken files in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pitfalls_benchmark.datasets import DatasetError, load_dataset, slugify


def test_published_counts_and_quirks(published: Path):
    gpt2 = load_dataset(published / "GPT2-XL")
    assert {k: len(v) for k, v in gpt2.cases.items()} == {
        "coverage": 2500, "reverse": 2500, "composite": 2000, "easy": 2500, "hard": 2500}
    # Repeated labels among true objects (DATA.md: GPT2-XL easy 2, hard 6) are scored once and noted.
    assert sum(bool(c.duplicate_labels) for c in gpt2.cases["easy"]) == 2
    assert sum(bool(c.duplicate_labels) for c in gpt2.cases["hard"]) == 6
    gptj = load_dataset(published / "GPT-J", splits=("composite",))
    assert len(gptj.cases["composite"]) == 2500
    assert sum(c.edits[0].object.label == c.edits[0].new_object.label for c in gptj.cases["composite"]) == 56


def test_case_ids_unique_deterministic_and_k_friendly(published: Path):
    first = [c.case_id for c in load_dataset(published / "GPT2-XL", limit=50).all_cases()]
    second = [c.case_id for c in load_dataset(published / "GPT2-XL", limit=50).all_cases()]
    assert first == second
    assert len(set(first)) == len(first)
    assert all(all(ch.isalnum() or ch in "-+" for ch in cid) for cid in first)
    assert first[0].startswith("coverage-0000-") and any(c.startswith("reverse-0000-P800-P170") for c in first)


def test_slugify_handles_unicode_and_punctuation():
    assert slugify("Zürich & \"Croÿ\"") == "zurich-croy"
    assert slugify("<>") == "x"


@pytest.fixture
def data_copy(published: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("reverse_edit.json", "easy.json", "conflict_prompts.json", "round_prompts.json"):
        records = json.loads((published / "GPT2-XL" / name).read_text())
        if isinstance(records, list):
            records = records[:5]
        (folder / name).write_text(json.dumps(records))
    return folder


def test_subset_of_files_is_fine(data_copy: Path):
    ds = load_dataset(data_copy)
    assert set(ds.cases) == {"reverse", "easy"}


def test_invalid_json_names_the_file(data_copy: Path):
    (data_copy / "easy.json").write_text('[{"type": "1-2@P69",')
    with pytest.raises(DatasetError, match=r"easy\.json: not valid JSON"):
        load_dataset(data_copy)


def test_missing_field_names_file_and_record(data_copy: Path):
    records = json.loads((data_copy / "reverse_edit.json").read_text())
    del records[3]["edits"][1]["new_object"]
    (data_copy / "reverse_edit.json").write_text(json.dumps(records))
    with pytest.raises(DatasetError, match=r"reverse_edit\.json: record 3: missing 'edits\[1\]\.new_object'"):
        load_dataset(data_copy)


def test_unknown_relation_names_the_prompt_file(data_copy: Path):
    records = json.loads((data_copy / "easy.json").read_text())
    records[2]["edit"]["relation"]["id"] = "P999999"
    (data_copy / "easy.json").write_text(json.dumps(records))
    with pytest.raises(DatasetError, match=r"easy\.json: record 2: unknown relation P999999 .*round_prompts\.json"):
        load_dataset(data_copy)


def test_missing_prompt_file_and_empty_folder(data_copy: Path, tmp_path: Path):
    (data_copy / "round_prompts.json").unlink()
    with pytest.raises(DatasetError, match=r"round_prompts\.json: missing"):
        load_dataset(data_copy)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="holds none of the case files"):
        load_dataset(empty)


def test_limit_takes_the_first_cases(data_copy: Path):
    ds = load_dataset(data_copy, limit=2)
    assert [c.index for c in ds.cases["easy"]] == [0, 1]
    shutil.rmtree(data_copy)


def test_a_file_edited_between_two_loads_is_read_again_and_a_load_cannot_change_the_next(published: Path, tmp_path: Path):
    """load_dataset keeps its parse per process for the files' exact bytes: an edit (same size, same second) is seen,
    a broken file is refused on every load, and what a caller does with its lists does not reach the next load."""
    data = tmp_path / "data"
    shutil.copytree(published / "GPT2-XL", data)
    first = load_dataset(data, splits=("easy",), limit=2)
    first.cases["easy"].clear()
    first.round_prompts.clear()
    again = load_dataset(data, splits=("easy",), limit=2)
    assert len(again.cases["easy"]) == 2 and again.round_prompts
    text = (data / "easy.json").read_text(encoding="utf-8")
    old_subject = again.cases["easy"][0].edit.subject.label
    new_subject = old_subject[::-1] if old_subject[::-1] != old_subject else old_subject.upper()
    (data / "easy.json").write_text(text.replace(json.dumps(old_subject)[1:-1], json.dumps(new_subject)[1:-1], 1), encoding="utf-8")
    assert load_dataset(data, splits=("easy",), limit=2).cases["easy"][0].edit.subject.label == new_subject
    (data / "easy.json").write_text("[", encoding="utf-8")
    for _ in range(2):
        with pytest.raises(DatasetError, match="not valid JSON"):
            load_dataset(data, splits=("easy",), limit=2)
