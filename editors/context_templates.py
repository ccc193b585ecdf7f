"""Context templates: short texts the model writes itself, prefixed to edit prompts.

ROME and MEMIT average keys and optimise values over these prefixes so an
edit generalises beyond one exact sentence. They are sampled (top-k 5) with
a fixed seed and cached per model, so every case and worker sees the same ones.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.cache import cached_json
from harness.models import LoadedModel


def sample_context_templates(loaded: LoadedModel, length_params: list[list[int]], seed: int) -> list[str]:
    """``["{}"] + [text + ". {}" ...]`` for each ``[max_new_tokens, count]`` pair."""
    tok, model = loaded.tokenizer, loaded.model
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    templates = ["{}"]
    with torch.random.fork_rng(devices=[loaded.device] if loaded.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for length, count in length_params:
            prompt = torch.tensor([[start]], device=loaded.device)
            out = model.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=5,
                max_new_tokens=length, min_new_tokens=length, num_return_sequences=count,
                pad_token_id=tok.pad_token_id, eos_token_id=None,
            )
            for text in tok.batch_decode(out[:, 1:], skip_special_tokens=True):
                clean = " ".join(text.replace("{", " ").replace("}", " ").split())
                templates.append(clean + ". {}")
    return templates


def context_templates(loaded: LoadedModel, length_params: list[list[int]], seed: int, cache_dir: Path) -> list[str]:
    """The cached templates for this model, lengths and seed."""
    lengths = "_".join(f"{a}x{b}" for a, b in length_params)
    path = cache_dir / "context_templates" / f"{loaded.fingerprint}-{lengths}-seed{seed}.json"
    return cached_json(path, lambda: sample_context_templates(loaded, length_params, seed))
