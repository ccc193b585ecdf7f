"""What every editor shares: a list of edits in, the original tensors it changed out."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from harness.datasets import Edit
from harness.models import LoadedModel


@dataclass(frozen=True)
class EditorSettings:
    """Harness-level settings an editor may need, beyond its hyper-parameters."""

    cache_dir: Path
    stats_corpus: str = "gensim-wiki"
    stats_tokens: int = 100_000  # corpus tokens behind the second-moment statistics
    seed: int = 0
    hparams_file: Path | None = None  # overrides the per-model file


class Editor(abc.ABC):
    """An editing method bound to one loaded model.

    ``apply`` edits the model in place and returns a clone of every parameter
    it changed, taken before the change; the harness copies them back to undo.
    """

    name: ClassVar[str]
    supports_batch: ClassVar[bool]  # can apply several edits as one joint update (needed by --mle)

    def __init__(self, loaded: LoadedModel, settings: EditorSettings) -> None:
        self.loaded = loaded
        self.settings = settings

    @abc.abstractmethod
    def apply(self, edits: Sequence[Edit]) -> dict[str, torch.Tensor]:
        """Edit the model; return ``{parameter name: original value}``."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """The configuration to echo in results (hyper-parameters and their file)."""


def keep_originals(model: torch.nn.Module, names: Sequence[str], into: dict[str, torch.Tensor]) -> None:
    """Clone each named parameter into ``into`` unless an earlier change already saved it."""
    for name in names:
        if name not in into:
            into[name] = model.get_parameter(name).detach().clone()
