"""Undo edits exactly: copy back the original values of the tensors an editor changed.

As in the reference implementation only changed tensors are saved, and the
first saved copy of a tensor wins, so a case that edits the same weight twice
still returns to the weights it started from, bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch


class WeightJournal:
    """Originals of every parameter changed since the journal was opened."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.originals: dict[str, torch.Tensor] = {}

    def record(self, originals: dict[str, torch.Tensor]) -> None:
        for name, value in originals.items():
            self.originals.setdefault(name, value)

    @torch.no_grad()
    def restore(self) -> None:
        for name, value in self.originals.items():
            self.model.get_parameter(name).copy_(value)
        self.originals.clear()


@contextlib.contextmanager
def undone_after(model: torch.nn.Module) -> Iterator[WeightJournal]:
    """Edits recorded in the journal are undone on leaving, also after an error."""
    journal = WeightJournal(model)
    try:
        yield journal
    finally:
        journal.restore()


def parameter_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter and buffer, bit for bit (any dtype, any device): equal digests prove an exact undo."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
