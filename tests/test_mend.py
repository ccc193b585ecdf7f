"""MEND on tiny models: training helps, edits undo exactly, batches work, training resumes, the suites run it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from editors import make_editor
from editors.mend.config import HPARAMS_DIR, MENDHyperParams, build_network, module_names
from editors.mend.editor import MEND
from editors.mend.train import train, training_data, validate
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.fingerprints import parameter_digest
from pitfalls_editkit.hparams import find_hparams_file, load_hparams
from pitfalls_editkit.undo import editing
from pitfalls_generator.cli import default_dataset_dir
from tests.helpers import records, run_pytest


@pytest.fixture(scope="module")
def geography(cache_dir: Path):
    return training_data([load_dataset(default_dataset_dir(cache_dir))], holdout=20)


def tiny_hparams(loaded) -> MENDHyperParams:
    return load_hparams(MENDHyperParams, find_hparams_file("mend", [HPARAMS_DIR], [loaded.hparams_key]))


@pytest.mark.slow
def test_training_lowers_the_validation_edit_loss_and_beats_the_untrained_editor(tiny_loader, geography, tmp_path):
    loaded = tiny_loader("tiny-gpt2")
    hp = dataclasses.replace(tiny_hparams(loaded), train_steps=40, val_every=20)
    torch.manual_seed(0)
    result = train(loaded, hp, geography, tmp_path / "mend.pt", progress=False)
    first, last = result["history"][0], result["history"][-1]
    assert last["step"] == 40 and last["n"] == 20
    assert last["edit_loss"] < first["edit_loss"] - 1.0, result["history"]
    assert last["edit_success"] > first["edit_success"], result["history"]
    # The step-0 row is the untrained network; check it against a fresh one, independently of the trainer's bookkeeping.
    untrained = validate(loaded, build_network(loaded, hp), geography, module_names(hp))
    assert untrained["edit_success"] == first["edit_success"]
    # The editor uses the best validated network, which the checkpoint keeps beside the last one.
    saved = torch.load(tmp_path / "mend.pt", weights_only=True)
    assert saved["best"]["edit_success"] == max(row["edit_success"] for row in result["history"][1:])


@pytest.mark.slow
def test_training_resumes_from_its_checkpoint(tiny_loader, geography, tmp_path):
    loaded = tiny_loader("tiny-gpt2")
    hp = dataclasses.replace(tiny_hparams(loaded), val_every=10)
    out = tmp_path / "mend.pt"
    train(loaded, hp, geography, out, steps=10, progress=False)
    resumed = train(loaded, hp, geography, out, steps=20, resume=True, progress=False)
    assert [row["step"] for row in resumed["history"]] == [0, 10, 20]


@pytest.mark.parametrize("model_name", ["tiny-gpt2", "tiny-llama", "tiny-gemma3"])
def test_batch_edit_changes_only_the_edited_weights_and_undoes_exactly(tiny_loader, cache_dir, published, model_name):
    loaded = tiny_loader(model_name)
    editor = make_editor("mend", loaded, EditorSettings(cache_dir=cache_dir))  # trained on first use, cached
    assert isinstance(editor, MEND) and editor.supports_batch and editor.checkpoint.is_file()
    edits = [c.edit for c in load_dataset(published / "GPT2-XL", splits=("easy",), limit=3).cases["easy"]]
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    digest = parameter_digest(loaded.model)
    with editing(loaded.model, editor):
        editor.apply(edits)
        changed = {n for n, p in loaded.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"{n}.weight" for n in module_names(editor.hparams)}
    assert parameter_digest(loaded.model) == digest


@pytest.mark.slow
def test_suites_run_mend_with_mle(cache_dir, tmp_path):
    proc = run_pytest(["suites/", "--model", "tiny-gpt2", "--editor", "mend", "--mle", "-m", "round", "--limit", "1",
                       "--results-dir", str(tmp_path), "--run-name", "mend", "--record-only"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    done = records(tmp_path / "mend" / "cases.jsonl")
    assert sorted(r["split"] for r in done) == ["easy", "hard"]
    assert json.loads((tmp_path / "mend" / "run.json").read_text())["editor"] == "mend+MLE"
    assert all(r["status"] == "ok" for r in done)


def test_a_network_trained_for_other_layers_is_refused_and_the_cache_is_keyed_by_hyper_parameters(tiny_loader, cache_dir, tmp_path):
    from editors.mend.config import CheckpointMismatch, checkpoint_paths, load_network

    loaded = tiny_loader("tiny-gpt2")
    hp = tiny_hparams(loaded)
    other = dataclasses.replace(hp, layers=[0])
    assert checkpoint_paths(hp, cache_dir, loaded.fingerprint)[1] != checkpoint_paths(other, cache_dir, loaded.fingerprint)[1]
    path = tmp_path / "trained.pt"
    torch.save({"network": build_network(loaded, hp).state_dict(), "hparams": dataclasses.asdict(hp)}, path)
    assert load_network(path, loaded, hp) is not None
    with pytest.raises(CheckpointMismatch, match=r"trained with layers=\[\d+(, \d+)*\], but the hyper-parameters ask for layers=\[0\]"):
        load_network(path, loaded, other)


@pytest.mark.slow
def test_training_on_first_use_gives_the_same_network_whatever_ran_before(tiny_loader, cache_dir, geography, tmp_path):
    """The network's initial weights are drawn under the run's seed, not from whatever torch's generator holds."""
    from editors.mend.train import train_on_first_use

    loaded = tiny_loader("tiny-gpt2")
    hp = dataclasses.replace(tiny_hparams(loaded), train_steps=4, val_every=4)
    networks = []
    for draws in (1, 1000):
        torch.rand(draws)  # what a run did before: a different state of the global generator each time
        state = torch.get_rng_state()
        settings = EditorSettings(cache_dir=tmp_path / f"cache-{draws}", stats_tokens=5000)
        (tmp_path / f"cache-{draws}").mkdir()
        (tmp_path / f"cache-{draws}" / "datasets").symlink_to(cache_dir / "datasets")  # the generated geography data, shared
        networks.append(torch.load(train_on_first_use(loaded, hp, settings), weights_only=True)["network"])
        assert torch.equal(torch.get_rng_state(), state)  # and the run's own draws go on as if nothing was trained
    assert networks[0].keys() == networks[1].keys()
    assert all(torch.equal(networks[0][k], networks[1][k]) for k in networks[0])
