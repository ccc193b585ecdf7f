"""What an editor's author relies on beyond apply(): hyper-parameter files found and checked, Trace hooks that see
the module's inputs, optional methods declared, and every public pitfalls_editkit name documented."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import pitfalls_editkit
from editors.rome import ROME
from harness.check_editor import _declared_capabilities
from pitfalls_editkit import Editor, EditorSettings, HyperParamsError, Trace
from tests.helpers import REPO


@dataclass(frozen=True)
class OneModuleHyperParams:
    layers: list[int]
    module_tmp: str
    extra_tmps: list[str]


class OneModule(Editor):
    name = "one-module"

    def declared_parameters(self):
        return []

    def apply(self, edits):
        return None


class MyROME(ROME):
    """A subclass in another package (here: the tests) with no hyper-parameter files of its own."""

    name = "my-rome"


def test_load_hparams_checks_every_module_template(tiny_loader, cache_dir, tmp_path):
    loaded = tiny_loader("tiny-gpt2")
    good = {"layers": [0, -1], "module_tmp": "transformer.h.{}.mlp.c_proj", "extra_tmps": ["transformer.ln_f", ""]}
    for name, values, expected in [
        ("good", good, None),
        ("slot", {**good, "module_tmp": "transformer.h.{}.mlp.nothing"},
         "module_tmp 'transformer.h.{}.mlp.nothing' gives 'transformer.h.0.mlp.nothing', which is not a module of the model"),
        ("plain", {**good, "extra_tmps": ["transformer.nowhere"]}, "extra_tmps[0] 'transformer.nowhere' is not a module of the model"),
    ]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(values), encoding="utf-8")
        editor = OneModule(loaded, EditorSettings(cache_dir=cache_dir, hparams_file=path))
        if expected is None:
            assert editor.load_hparams(OneModuleHyperParams) == (path, OneModuleHyperParams(**values))
        else:
            with pytest.raises(HyperParamsError) as error:
                editor.load_hparams(OneModuleHyperParams)
            assert str(error.value) == f"{path}: {expected}"


def test_a_subclass_elsewhere_falls_back_to_its_parents_files(tiny_loader, cache_dir):
    loaded = tiny_loader("tiny-gpt2")
    editor = MyROME(loaded, EditorSettings(cache_dir=cache_dir, stats_tokens=5000))
    assert editor.hparams_path == REPO / "editors" / "hparams" / "rome" / "tiny-gpt2.json"
    groups = MyROME.hparams_folder_groups()
    assert groups[0][0] == Path(__file__).parent / "hparams" / "my-rome"  # its own folders first
    assert REPO / "editors" / "hparams" / "rome" in groups[1]


def test_trace_can_edit_an_output_from_the_modules_input(tiny_loader):
    loaded = tiny_loader("tiny-gpt2")
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt").input_ids
    name = "transformer.h.0.mlp.c_proj"
    seen, added = [], []

    def shifted_by_input(output, inputs, module_name):
        seen.append(module_name)
        added.append(inputs[0].mean(dim=-1, keepdim=True))
        return output + added[-1]

    with torch.no_grad(), Trace(loaded.model, name) as plain:
        base = loaded.model(ids).logits
    with torch.no_grad(), Trace(loaded.model, name, edit_output_from_input=shifted_by_input) as traced:
        edited = loaded.model(ids).logits
    assert seen == [name] and not torch.equal(base, edited)
    assert torch.allclose(traced.output, plain.output + added[0])
    assert not loaded.model.get_submodule(name)._forward_hooks  # removed on leaving
    with pytest.raises(ValueError, match="not both"):
        Trace(loaded.model, name, edit_output=lambda o, n: o, edit_output_from_input=lambda o, i, n: o)


class PreparesUndeclared(OneModule):
    name = "prepares-undeclared"

    def prepare(self, edits):
        return None


class DeclaresWithoutMethod(OneModule):
    name = "declares-without-method"
    can_compute_updates = True


def test_the_checker_reports_an_optional_method_defined_but_not_declared_and_the_reverse(tiny_loader, cache_dir):
    loaded = tiny_loader("tiny-gpt2")
    settings = EditorSettings(cache_dir=cache_dir)
    (check,) = _declared_capabilities(PreparesUndeclared(loaded, settings))
    assert check.passed is False and "prepare() is defined but can_prepare is not True" in check.detail
    (check,) = _declared_capabilities(DeclaresWithoutMethod(loaded, settings))
    assert check.passed is False and "can_compute_updates is True but compute_updates() is not defined" in check.detail
    assert _declared_capabilities(OneModule(loaded, settings)) == []
    rome = ROME(loaded, EditorSettings(cache_dir=cache_dir, stats_tokens=5000))
    assert pitfalls_editkit.capabilities(rome) == ["prepare", "compute_updates"]
    assert all(check.passed for check in _declared_capabilities(rome))


def test_every_public_editkit_name_has_an_entry_in_the_api_reference():
    page = (REPO / "docs" / "writing-an-editor.md").read_text(encoding="utf-8")
    reference = page[page.index("## The pitfalls_editkit API"):]
    documented = set(re.findall(r"^#### `([A-Za-z_]+)`", reference, flags=re.MULTILINE))
    assert documented == set(pitfalls_editkit.__all__), (set(pitfalls_editkit.__all__) - documented, documented - set(pitfalls_editkit.__all__))
