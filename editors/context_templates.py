"""Context templates: short texts the model writes itself, prefixed to edit prompts.

ROME and MEMIT average keys and optimise values over these prefixes so an
edit generalises beyond one exact sentence. They are sampled (top-k 5) with
a fixed seed and cached per model, so every case and worker sees the same ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pitfalls_editkit.cache import cached_json
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.progress import step


def _start_ids(tok: Any, start_words: list[str]) -> list[list[int]]:
    """Token ids each generation starts from: the words given, or the BOS (else EOS) token (ROME's "<|endoftext|>")."""
    if start_words:
        return [tok(word)["input_ids"] for word in start_words]
    return [[tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]]


def sample_context_templates(loaded: LoadedModel, length_params: list[list[int]], seed: int, start_words: list[str]) -> list[str]:
    """``["{}"] + [text + ". {}" ...]``: for each ``[max_new_tokens, count]``, ``count`` texts in all."""
    tok, model = loaded.tokenizer, loaded.model
    starts = _start_ids(tok, start_words)
    templates = ["{}"]
    with torch.random.fork_rng(devices=[loaded.device] if loaded.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for length, count in length_params:
            for start in starts:
                prompt = torch.tensor([start], device=loaded.device)
                out = model.generate(
                    input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=5,
                    max_new_tokens=length, min_new_tokens=length, num_return_sequences=max(1, count // len(starts)),
                    pad_token_id=tok.pad_token_id, eos_token_id=None,
                )
                skip = 0 if start_words else 1  # keep the start words, drop a BOS/EOS start
                for text in tok.batch_decode(out[:, skip:], skip_special_tokens=True):
                    clean = " ".join(text.replace("{", " ").replace("}", " ").split())
                    templates.append(clean + ". {}")
    return templates


def context_templates(
    loaded: LoadedModel, length_params: list[list[int]], seed: int, cache_dir: Path, start_words: list[str] | None = None
) -> list[str]:
    """The cached templates for this model, lengths, start words and seed."""
    lengths = "_".join(f"{a}x{b}" for a, b in length_params)
    starts = "-".join(start_words) if start_words else "bos"
    path = cache_dir / "context_templates" / f"{loaded.fingerprint}-{lengths}-{starts}-seed{seed}.json"
    def sample() -> list[str]:
        with step(f"sampling context templates {lengths} from {loaded.name} (once per model)"):
            return sample_context_templates(loaded, length_params, seed, start_words or [])

    return cached_json(path, sample)
