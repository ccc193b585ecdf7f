"""Model presets, tiny models, devices and the on-disk cache."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pitfalls_editkit.cache import cached_json
from pitfalls_editkit.models import ModelLoadError, load_model, resolve_device
from pitfalls_editkit.presets import GGUF_PRESETS, check_tokenizer
from pitfalls_editkit.tiny_models import TINY_BUILDERS


@pytest.mark.parametrize("name", sorted(TINY_BUILDERS))
def test_tiny_models_are_deterministic_and_of_their_family(tiny_loader, name):
    first, second = tiny_loader(name), tiny_loader(name)
    assert first.fingerprint == second.fingerprint
    for (n1, p1), (n2, p2) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    expected = {"tiny-gpt2": "gpt2", "tiny-gptj": "gptj", "tiny-llama": "llama", "tiny-gemma3": "gemma3_text"}[name]
    assert first.family == expected
    assert first.tokenizer("The Eiffel Tower")["input_ids"] == [504, 414, 46682, 18669]  # SmolLM2's real BPE


def test_a_tokenizer_converted_differently_from_the_presets_probe_is_refused(tiny_loader):
    smollm2_tokenizer = tiny_loader("tiny-llama").tokenizer  # SmolLM2's, converted from its GGUF file
    check_tokenizer("smollm2-135m", GGUF_PRESETS["smollm2-135m"], smollm2_tokenizer)  # its own probe passes
    with pytest.raises(ModelLoadError) as refused:  # Gemma's probe: other ids, as a wrong conversion gives
        check_tokenizer("gemma3-270m", GGUF_PRESETS["gemma3-270m"], smollm2_tokenizer)
    message = str(refused.value)
    assert message.startswith("--model gemma3-270m: transformers ") and "converts this model's GGUF tokenizer wrongly" in message
    assert "expected [2, 818, 5946" in message and "transformers>=5.23,<6" in message and "\n" not in message


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="--device 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_folder_without_config_is_a_clear_error(tmp_path: Path, cache_dir: Path):
    with pytest.raises(ModelLoadError, match="folder has no config.json"):
        load_model(str(tmp_path), torch.device("cpu"), cache_dir=cache_dir)


def test_unknown_hub_id_offline_is_one_clear_error(cache_dir: Path):
    code = ("import torch; from pitfalls_editkit.models import load_model, ModelLoadError\n"
            "try:\n    load_model('nobody-here/no-such-model', torch.device('cpu'))\n"
            "except ModelLoadError as e:\n    print('ERR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PITFALLS_CACHE_DIR": str(cache_dir)}
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=120)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("ERR"))
    assert "--model nobody-here/no-such-model: not a preset" in line and "gemma3-270m" in line


def test_bad_dtype_is_rejected(cache_dir: Path):
    with pytest.raises(ModelLoadError, match="--dtype 'float8'"):
        load_model("tiny-gpt2", torch.device("cpu"), dtype="float8", cache_dir=cache_dir)


def _compute_once(args: tuple[str, str]) -> int:
    path, counter = args

    def compute():
        with open(counter, "a") as handle:
            handle.write("x")
        return {"value": 42}

    return cached_json(Path(path), compute)["value"]


@pytest.mark.slow
def test_cache_is_computed_once_by_concurrent_workers(tmp_path: Path):
    counter = tmp_path / "counter"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        values = pool.map(_compute_once, [(str(tmp_path / "c.json"), str(counter))] * 8)
    assert values == [42] * 8
    assert counter.read_text() == "x"


def test_the_one_time_gguf_conversion_reads_each_file_once_and_puts_the_reader_back(monkeypatch: pytest.MonkeyPatch):
    import gguf

    from pitfalls_editkit.models import _one_gguf_parse

    made: list[str] = []

    class CountingReader:
        def __init__(self, path, mode="r"):
            made.append(str(path))

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    with _one_gguf_parse():
        first, again, other = gguf.GGUFReader("a.gguf"), gguf.GGUFReader(Path("a.gguf")), gguf.GGUFReader("b.gguf")
    assert first is again and other is not first and made == ["a.gguf", "b.gguf"]
    with pytest.raises(RuntimeError), _one_gguf_parse():
        raise RuntimeError("a failed conversion")
    assert gguf.GGUFReader is CountingReader  # transformers' later reads (another file, another process) are its own
