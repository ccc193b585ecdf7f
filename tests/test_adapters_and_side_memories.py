"""LoRA (through peft) and WISE on the tiny models: the edit holds while its patches are in place, WISE routes an
unrelated prompt to the main memory bit for bit, LoRA's patch computes what peft's own layer computes, a failed edit
of a chain rolls the side memory back, and every kind of editor leaves the next case a bit-identical model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from editors.lora import LoRA
from editors.wise import WISE, ties
from harness.chain import Chain
from harness.check_editor import run_checks
from harness.executors.workbench import Workbench
from harness.guard import EditFailure, ModelGuard, ModelState
from pitfalls_benchmark.datasets import load_dataset
from pitfalls_editkit.fingerprints import parameter_digest
from pitfalls_editkit.hparams import HyperParamsError
from tests.helpers import records, run_pytest, suite_args
from tests.helpers import settings_with_examples as settings


@pytest.fixture()
def llama(tiny_loader):
    return tiny_loader("tiny-llama")


def easy_edits(published: Path, n: int):
    return [case.edit for case in load_dataset(published / "GPT2-XL", splits=("easy",), limit=n).cases["easy"]]


def test_wise_answers_an_edited_prompt_from_its_side_memory_and_an_unrelated_one_from_the_main_memory(tiny_loader, cache_dir,
                                                                                                       published):
    # tiny-llama: on the random tiny-gpt2 and tiny-gemma3 an unrelated prompt is as far from the main memory as the
    # edited one (their hidden states carry little of the input), so the router cannot tell them apart there
    # n_iter 30: the file's 15 steps make the edit win but leave the margin between the two prompts' activations too
    # small for the router on this random model
    loaded = tiny_loader("tiny-llama")
    bench = Workbench.build(WISE(loaded, settings(cache_dir, published, n_iter=30)))
    edit, other = easy_edits(published, 2)
    digest, state = parameter_digest(loaded.model), ModelState.read(loaded.model)
    before = bench.scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label])
    unrelated = bench.scorer.fact_scores([other.prompt], [other.new_object.label, other.object.label])
    with bench.guard.case(bench.editor) as case:
        case.apply([edit], seed=0)
        new, old = bench.scorer.fact_scores([edit.prompt], [edit.new_object.label, edit.object.label])
        assert new > old and (new, old) != tuple(before)  # the side memory answered the edited prompt
        assert bench.scorer.fact_scores([other.prompt], [other.new_object.label, other.object.label]) == unrelated  # main memory
        assert parameter_digest(loaded.model) == digest
    after = ModelState.read(loaded.model)
    assert parameter_digest(loaded.model) == digest and after.hooks == state.hooks and after.modules == state.modules


def test_wise_saves_shards_and_merges_them_and_a_failed_edit_of_a_chain_rolls_the_side_memory_back(llama, cache_dir, published):
    editor = WISE(llama, settings(cache_dir, published, n_iter=3))  # tiny-llama's file: save_freq 2, merge_freq 4
    chain = Chain(ModelGuard(llama.model), editor, "chain-1-of-1")
    edits = easy_edits(published, 5)
    for number, edit in enumerate(edits[:3]):
        chain.apply([edit], seed=number)
    memory = editor.memory
    assert memory.edits == 3 and len(memory.saved) == 1  # one shard of two edits saved, the third being written
    saved_current, saved_shards = memory.current.clone(), [s.clone() for s in memory.saved]
    original_apply = editor.apply
    editor.apply = lambda batch: (original_apply(batch), (_ for _ in ()).throw(RuntimeError("injected failure")))[0]
    with pytest.raises(EditFailure, match="injected failure"):
        chain.apply([edits[3]], seed=3)
    editor.apply = original_apply
    assert editor.memory is memory and memory.edits == 3 and torch.equal(memory.current, saved_current)
    assert len(memory.saved) == 1 and torch.equal(memory.saved[0], saved_shards[0])
    chain.apply([edits[3]], seed=3)  # the fourth edit fills the second shard: both are merged into one memory (retrieve)
    assert memory.edits == 4 and len(memory.saved) == 1 and not torch.equal(memory.saved[0], saved_shards[0])
    assert chain.restore() is None


def test_ties_keeps_the_top_share_elects_signs_and_averages_the_agreeing_changes():
    base = torch.zeros(4)
    merged = ties(base, [torch.tensor([1.0, -2.0, 0.1, 0.0]), torch.tensor([3.0, 1.0, 0.0, -0.2])], [0.5, 0.5], density=0.5)
    # the first keeps 1 and -2, the second 3 and 1; elected signs (weighted sums 2, -0.5): +, -; the second's +1 at
    # index 1 disagrees and is left out; agreeing means: (0.5 + 1.5) / 1 = 2 and -1 / 0.5 = -2
    assert torch.equal(merged, torch.tensor([2.0, -2.0, 0.0, 0.0]))


def test_lora_patches_compute_what_peft_computes_and_the_model_comes_back_bit_identical(llama, cache_dir, published):
    from peft import LoraConfig, LoraModel

    editor = LoRA(llama, settings(cache_dir, published, num_steps=5))
    guard = ModelGuard(llama.model)
    (edit,) = easy_edits(published, 1)
    digest, state = parameter_digest(llama.model), ModelState.read(llama.model)
    ids = torch.tensor([llama.tokenizer(edit.prompt)["input_ids"]])
    with guard.case(editor) as case:
        case.apply([edit], seed=0)
        patched = llama.model(input_ids=ids).logits
        patches = dict(case.patches.patches)
    assert len(patches) == 8  # q_proj and v_proj of tiny-llama's four layers
    hp = editor.hparams
    tuner = LoraModel(llama.model, LoraConfig(r=hp.rank, lora_alpha=hp.lora_alpha, target_modules=editor.modules), "check")
    try:
        with torch.no_grad():
            for name, patch in patches.items():
                layer = tuner.model.get_submodule(name)
                layer.lora_A["check"].weight.copy_(patch.lora_a)
                layer.lora_B["check"].weight.copy_(patch.lora_b)
            by_peft = llama.model(input_ids=ids).logits
    finally:
        tuner.unload()
        llama.model.__dict__.pop("peft_config", None)
    assert torch.equal(patched, by_peft)
    after = ModelState.read(llama.model)
    assert parameter_digest(llama.model) == digest and after.hooks == state.hooks and after.modules == state.modules
    assert "peft_config" not in llama.model.__dict__


def test_lora_target_modules_that_name_nothing_are_one_clear_error(llama, cache_dir, published):
    with pytest.raises(HyperParamsError, match=r"target_modules \['no_such_proj'\] \(layers all\) name no module of tiny-llama"):
        LoRA(llama, settings(cache_dir, published, target_modules=["no_such_proj"]))


@pytest.mark.parametrize("name", ["grace", "wise", "lora", "ike"])
def test_after_a_case_of_any_kind_the_next_case_gets_the_original_model_with_no_hook_and_no_module(llama, cache_dir, published,
                                                                                                  name):
    from editors.registry import make_editor

    editor = make_editor(name, llama, settings(cache_dir, published))
    bench = Workbench.build(editor)
    first, second = easy_edits(published, 2)
    digest, state = parameter_digest(llama.model), ModelState.read(llama.model)
    unedited = bench.scorer.fact_scores([second.prompt], [second.new_object.label, second.object.label])
    with bench.guard.case(editor) as case:
        case.apply([first], seed=0)
    after = ModelState.read(llama.model)
    assert parameter_digest(llama.model) == digest and after.hooks == state.hooks and after.modules == state.modules
    assert bench.guard.context.current is None
    assert bench.scorer.fact_scores([second.prompt], [second.new_object.label, second.object.label]) == unedited


@pytest.mark.parametrize("name", ["wise", "lora"])
def test_the_checker_passes_wise_and_lora(llama, cache_dir, published, name):
    from editors.registry import make_editor

    checks = run_checks(make_editor(name, llama, settings(cache_dir, published)), llama)
    assert all(check.passed is not False for check in checks), [c for c in checks if c.passed is False]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["grace", "wise", "lora", "ike"])
def test_every_non_weight_editor_records_every_case_ok_in_the_suites(published, cache_dir, tmp_path, name):
    proc = run_pytest(suite_args(published, tmp_path, "--editor", name, "--record-only", "--limit", "2", model="tiny-llama",
                                 run_name=name), cache_dir)
    assert proc.returncode == 0, proc.output[-3000:]
    lines = records(tmp_path / name / "cases.jsonl")
    assert len(lines) == 10 and {r["status"] for r in lines} == {"ok"}, [r.get("error") for r in lines]
