"""Undo edits exactly: clone the tensors an edit may change before it, copy them back after.

The first saved copy of a tensor wins, so a case that edits the same weight
twice still returns to the weights it started from, bit for bit. The harness
journals every editor's declared parameters this way; tests and benchmarks
use the same journal around their own edits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

from pitfalls_editkit.contract import declared_names
from pitfalls_editkit.fingerprints import named_tensors


class WeightJournal:
    """Originals of every tensor saved since the journal was opened."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.originals: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def save(self, names: Iterable[str]) -> None:
        """Clone each named parameter or buffer unless it was saved already."""
        tensors = named_tensors(self.model)
        for name in names:
            if name not in self.originals:
                if name not in tensors:
                    raise LookupError(f"parameter {name!r} is not in the model ({type(self.model).__name__})")
                self.originals[name] = tensors[name].detach().clone()

    @torch.no_grad()
    def restore(self) -> None:
        tensors = named_tensors(self.model)
        for name, value in self.originals.items():
            tensors[name].copy_(value)
        self.originals.clear()


@contextlib.contextmanager
def undone_after(model: torch.nn.Module, names: Iterable[str] = ()) -> Iterator[WeightJournal]:
    """Tensors saved in the journal (``names``, and any ``journal.save``d later) are restored on leaving, also after an error."""
    journal = WeightJournal(model)
    journal.save(names)
    try:
        yield journal
    finally:
        journal.restore()


@contextlib.contextmanager
def editing(model: torch.nn.Module, editor: object) -> Iterator[WeightJournal]:
    """Save what ``editor`` declares, then undo on leaving: ``with editing(model, editor): editor.apply([edit])``."""
    try:
        with undone_after(model, declared_names(editor, model)) as journal:  # type: ignore[arg-type]
            yield journal
    finally:
        forget = getattr(editor, "model_restored", None)
        if forget is not None:
            forget()
