"""ROME on tiny models: the edit wins, and undoing it restores every parameter bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from editors import UnknownEditorError, make_editor
from editors.representations import subject_last_index
from harness.executors.single import run_one
from harness.executors.workbench import Workbench
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.facts import Edit, Entity, Relation
from pitfalls_editkit.fingerprints import parameter_digest
from pitfalls_editkit.hparams import HyperParamsError
from pitfalls_editkit.scoring import Scorer
from pitfalls_editkit.undo import editing

TINY = ["tiny-gpt2", "tiny-gptj", "tiny-llama", "tiny-gemma3"]
EDIT = Edit(Entity("Q90", "Paris"), Relation("P17", "{} is located in the country of", "", "country"),
            Entity("Q142", "France"), Entity("Q38", "Italy"))


@pytest.mark.parametrize("name", TINY)
def test_rome_edits_win_and_undo_is_exact(tiny_loader, cache_dir, published, name):
    """Random tiny models pass subject information on weakly, so most (not all) edits win there."""
    loaded = tiny_loader(name)
    editor = make_editor("rome", loaded, EditorSettings(cache_dir=cache_dir, stats_tokens=5000))
    scorer = Scorer(loaded.model, loaded.tokenizer)
    edits = [EDIT] + [case.edit for case in load_dataset(published / "GPT2-XL", splits=("easy",), limit=9).cases["easy"]]
    digest = parameter_digest(loaded.model)
    moved = wins = 0
    for edit in edits:
        prompt = [edit.relation.prompt.format(edit.subject.label)]
        objects = [edit.new_object.label, edit.object.label]
        before_new, before_old = scorer.fact_scores(prompt, objects)
        with editing(loaded.model, editor):
            editor.apply([edit])
            assert parameter_digest(loaded.model) != digest
            after_new, after_old = scorer.fact_scores(prompt, objects)
        assert parameter_digest(loaded.model) == digest
        moved += after_new > before_new
        wins += after_new > after_old
    assert moved >= 6 and wins >= 6, (moved, wins)


def test_rome_changes_only_the_rewrite_weight(tiny_loader, cache_dir):
    loaded = tiny_loader("tiny-gpt2")
    editor = make_editor("rome", loaded, EditorSettings(cache_dir=cache_dir, stats_tokens=5000))
    assert editor.declared_parameters() == ["transformer.h.0.mlp.c_proj.weight"]
    before = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    editor.apply([EDIT])
    changed = [name for name, p in loaded.model.named_parameters() if not torch.equal(p, before[name])]
    assert changed == ["transformer.h.0.mlp.c_proj.weight"]
    delta = loaded.model.get_parameter("transformer.h.0.mlp.c_proj.weight") - before["transformer.h.0.mlp.c_proj.weight"]
    assert torch.linalg.matrix_rank(delta).item() == 1


def test_every_case_leaves_the_model_bit_identical(tiny_loader, cache_dir, published):
    loaded = tiny_loader("tiny-llama")
    editor = make_editor("rome", loaded, EditorSettings(cache_dir=cache_dir, stats_tokens=5000))
    dataset = load_dataset(published / "GPT2-XL", limit=1)
    bench = Workbench.build(editor, dataset)
    digest = parameter_digest(loaded.model)
    for case in dataset.all_cases():
        outcome = run_one(bench, case)
        assert parameter_digest(loaded.model) == digest, case.case_id
        assert outcome.seconds_edit > 0
        assert set(outcome.metrics) >= ({"IR", "D", "FR"} if case.benchmark == "round" else {"CS_exp", "CM"})


def test_subject_last_index_matches_the_tokens(tiny_loader):
    tok = tiny_loader("tiny-gpt2").tokenizer
    template, subject = "The mother of {} is", "Maria Theresa"
    index = subject_last_index(tok, template, subject)
    ids = tok(template.format(subject))["input_ids"]
    assert tok.decode(ids[: index + 1]).endswith("Theresa")


def test_unknown_editor_is_one_clear_error(tiny_loader, cache_dir):
    with pytest.raises(UnknownEditorError, match="--editor 'romeo': unknown editor"):
        make_editor("romeo", tiny_loader("tiny-gpt2"), EditorSettings(cache_dir=cache_dir))


def test_hparams_file_is_validated(tiny_loader, cache_dir, tmp_path: Path):
    loaded = tiny_loader("tiny-gpt2")
    good = json.loads((Path(__file__).parents[1] / "editors/hparams/rome/tiny-gpt2.json").read_text())
    bad_key = tmp_path / "bad_key.json"
    bad_key.write_text(json.dumps({**good, "v_lr_typo": 1}))
    with pytest.raises(HyperParamsError, match="unknown key.*v_lr_typo"):
        make_editor("rome", loaded, EditorSettings(cache_dir=cache_dir, hparams_file=bad_key))
    bad_module = tmp_path / "bad_module.json"
    bad_module.write_text(json.dumps({**good, "rewrite_module_tmp": "model.layers.{}.mlp.down_proj"}))
    with pytest.raises(HyperParamsError, match="'model.layers.0.mlp.down_proj', which is not a module"):
        make_editor("rome", loaded, EditorSettings(cache_dir=cache_dir, hparams_file=bad_module))


def test_published_values_are_kept_exactly():
    root = Path(__file__).parents[1] / "editors/hparams/rome"
    gpt2 = json.loads((root / "gpt2-xl.json").read_text())
    gptj = json.loads((root / "gpt-j-6b.json").read_text())
    assert (gpt2["layers"], gpt2["v_loss_layer"], gpt2["rewrite_module_tmp"]) == ([17], 47, "transformer.h.{}.mlp.c_proj")
    assert (gptj["layers"], gptj["v_loss_layer"], gptj["rewrite_module_tmp"]) == ([5], 27, "transformer.h.{}.mlp.fc_out")
    for hp in (gpt2, gptj):
        assert (hp["v_num_grad_steps"], hp["v_lr"], hp["v_weight_decay"], hp["clamp_norm_factor"], hp["kl_factor"]) == (20, 0.5, 0.5, 4, 0.0625)
        assert hp["mom2_adjustment"] is True and hp["mom2_n_samples"] == 100000
