"""The paper's setting, decided in both directions, and shown by the report only then."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from editors.corpus import REFERENCE_CORPUS
from editors.mend.config import MENDHyperParams
from editors.mend.editor import MEND
from editors.rome import ROME, ROMEHyperParams
from harness.paper_setting import paper_setting_differences
from pitfalls_benchmark.paper_runs import published_folder_of
from pitfalls_editkit.hparams import load_hparams

HPARAMS = Path(__file__).resolve().parents[1] / "editors" / "hparams"


def stub(cls, hparams, described):
    """An editor as built for GPT-2 XL (no 6 GB model needed): its hyper-parameters and what it describes."""
    editor = object.__new__(cls)
    editor.hparams = hparams
    editor.describe = lambda: described
    return editor


def rome(**changes):
    hp = load_hparams(ROMEHyperParams, HPARAMS / "rome" / "gpt2-xl.json")
    return stub(ROME, dataclasses.replace(hp, **changes), {"stats_corpus": REFERENCE_CORPUS})


def test_the_published_folders_are_known_by_content(published, tmp_path):
    assert published_folder_of(published / "GPT2-XL") == "GPT2-XL"
    assert published_folder_of(published / "GPT-J") == "GPT-J"
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(published / "GPT2-XL" / "easy.json", partial)
    assert published_folder_of(partial) == "GPT2-XL"  # a subset of the published files is still that folder
    (partial / "hard.json").write_text((published / "GPT2-XL" / "hard.json").read_text(encoding="utf-8").replace("a", "b", 1))
    assert published_folder_of(partial) is None  # one changed file is not
    assert published_folder_of(None) is None


def test_rome_on_gpt2_xl_in_the_paper_setting(published):
    assert paper_setting_differences("gpt2-xl", published / "GPT2-XL", rome(), mle=False) == []


@pytest.mark.parametrize(("model", "folder", "editor", "mle", "expected"), [
    ("gemma3-270m", "GPT2-XL", "rome", False, "model gemma3-270m"),
    ("gpt2-xl", "GPT-J", "rome", False, "data "),
    ("gpt2-xl", None, "rome", False, "data generated"),
    ("gpt2-xl", "GPT2-XL", "rome-lr", False, "hyper-parameter v_lr = 0.1, published 0.5"),
    ("gpt2-xl", "GPT2-XL", "rome-gensim", False, "statistics from gensim-wiki"),
    ("gpt2-xl", "GPT2-XL", "rome", True, "editor rome+MLE"),
    ("gpt2-xl", "GPT2-XL", "mend-ours", False, "MEND network gpt2-xl.pt is ours"),
])
def test_what_differs_from_the_paper_is_named(published, model, folder, editor, mle, expected):
    editors = {
        "rome": rome(), "rome-lr": rome(v_lr=0.1),
        "rome-gensim": stub(ROME, rome().hparams, {"stats_corpus": "gensim-wiki"}),
        "mend-ours": stub(MEND, load_hparams(MENDHyperParams, HPARAMS / "mend" / "gpt2-xl.json"),
                          {"original_network": False, "checkpoint": "gpt2-xl.pt"}),
    }
    differs = paper_setting_differences(model, published / folder if folder else None, editors[editor], mle)
    assert any(expected in line for line in differs), differs


def test_mend_with_the_original_network_is_the_paper_setting(published):
    hp = load_hparams(MENDHyperParams, HPARAMS / "mend" / "gpt2-xl.json")
    editor = stub(MEND, dataclasses.replace(hp, checkpoint="/data/mend-10tok-gpt2-xl.pt"), {"original_network": True})
    assert paper_setting_differences("gpt2-xl", published / "GPT2-XL", editor, mle=False) == []
