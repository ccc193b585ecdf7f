"""Second-moment statistics ``C = E[k k^T]`` of the keys entering an MLP output projection.

ROME and MEMIT whiten their key vectors with ``C^-1``. ``C`` is estimated
over a text corpus (editors/corpus.py), once per model, module, corpus and
token budget, and cached on disk; the forward pass stops right after the
module, so later layers cost nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from editkit.cache import cached_tensors
from editkit.models import LoadedModel
from editkit.nethook import Trace
from editors.corpus import MIN_CHUNK_TOKENS, Corpus, CorpusError, load_corpus

if TYPE_CHECKING:
    from editkit.contract import EditorSettings

CHUNK_TOKENS = 128  # tokens per text sample
MOM2_DTYPES = {"float32": torch.float32, "float64": torch.float64}  # hparams' mom2_dtype
BATCH = 16


def collect_second_moment(loaded: LoadedModel, module_name: str, corpus: Corpus, max_tokens: int, max_samples: int) -> dict[str, torch.Tensor]:
    """Accumulate ``sum k k^T`` (float64) over at most ``max_tokens`` corpus tokens."""
    tok, model = loaded.tokenizer, loaded.model
    chunks: list[list[int]] = []
    total = 0
    for paragraph in corpus.paragraphs[:max_samples]:
        ids = tok(paragraph)["input_ids"]
        for start in range(0, len(ids), CHUNK_TOKENS):
            piece = ids[start : start + CHUNK_TOKENS]
            if len(piece) < MIN_CHUNK_TOKENS:
                continue
            chunks.append(piece)
            total += len(piece)
            if total >= max_tokens:
                break
        if total >= max_tokens:
            break
    moment: torch.Tensor | None = None
    count = 0
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for start in range(0, len(chunks), BATCH):
        batch = chunks[start : start + BATCH]
        width = max(len(c) for c in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, chunk in enumerate(batch):
            ids[row, : len(chunk)] = torch.tensor(chunk)
            mask[row, : len(chunk)] = 1
        ids, mask = ids.to(loaded.device), mask.to(loaded.device)
        with torch.no_grad(), Trace(model, module_name, retain_input=True, retain_output=False, stop=True) as trace:
            model.base_model(input_ids=ids, attention_mask=mask)
        keys = trace.input[mask.bool()].double()
        moment = keys.T @ keys if moment is None else moment + keys.T @ keys
        count += keys.shape[0]
    if moment is None:
        raise CorpusError(f"--stats-corpus {corpus.name}: gave no text piece of {MIN_CHUNK_TOKENS} tokens or more to compute "
                          "statistics from; give a longer text")
    return {"sum_kkT": moment.cpu(), "count": torch.tensor(count)}


def second_moment(
    loaded: LoadedModel, module_name: str, corpus: Corpus, max_tokens: int, max_samples: int, dtype: torch.dtype, cache_dir: Path
) -> torch.Tensor:
    """``C = E[k k^T]`` (in ``dtype``, on the model's device), from the cached statistics."""
    key = f"{loaded.fingerprint}-{module_name}-{corpus.digest}-{max_tokens}-{max_samples}"
    stats = cached_tensors(
        cache_dir / "stats" / f"{key}.pt",
        lambda: collect_second_moment(loaded, module_name, corpus, max_tokens, max_samples),
    )
    return (stats["sum_kkT"] / stats["count"].double()).to(dtype).to(loaded.device)


def editor_second_moment(loaded: LoadedModel, settings: EditorSettings, module_name: str, max_samples: int, dtype_name: str) -> torch.Tensor:
    """``C`` for an editor: its settings name the corpus and token budget, its hyper-parameters the rest."""
    return second_moment(loaded, module_name, load_corpus(settings.stats_corpus), settings.stats_tokens, max_samples,
                         MOM2_DTYPES[dtype_name], settings.cache_dir)
