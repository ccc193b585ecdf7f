"""Weight updates as low-rank factors, and a model whose batch rows each see their own update.

ROME writes a rank-one matrix per edit, MEMIT one of rank at most its batch
size. Kept as factors, ``ΔW = left @ right.T`` with ``left (out, r)`` and
``right (in, r)``, an update need not be written into the weights at all: a
forward hook adds ``(x @ right) @ left.T`` to the module's output. With one
update per group of batch rows, K cases that each edited "their own model"
go through the one unedited model in one batch (``--case-batch``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from transformers.pytorch_utils import Conv1D

from pitfalls_editkit.nethook import get_module


def weight_update(module: torch.nn.Module, update_out_in: torch.Tensor) -> torch.Tensor:
    """An (out, in) update laid out like the module's weight: Conv1D stores (in, out), Linear (out, in)."""
    return update_out_in.T if isinstance(module, Conv1D) else update_out_in


def out_in_shape(module: torch.nn.Module) -> tuple[int, int]:
    """The module weight's shape as ``(out, in)``, whatever its layout."""
    shape = tuple(module.weight.shape)
    return (shape[1], shape[0]) if isinstance(module, Conv1D) else (shape[0], shape[1])


@dataclass(frozen=True)
class LowRankUpdate:
    """Module name -> ``(left, right)``: the module's weight changes by ``left @ right.T``, laid out as ``(out, in)``."""

    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def __add__(self, other: LowRankUpdate | None) -> LowRankUpdate:
        """Both updates at once: the factors of a module shared by both are concatenated (the ranks add)."""
        if other is None:
            return self
        merged = dict(self.factors)
        for name, (left, right) in other.factors.items():
            if name in merged:
                old_left, old_right = merged[name]
                merged[name] = (torch.cat([old_left, left], 1), torch.cat([old_right, right], 1))
            else:
                merged[name] = (left, right)
        return LowRankUpdate(merged)

    def __radd__(self, other: LowRankUpdate | None) -> LowRankUpdate:
        return self if other is None else other + self

    def dense(self, name: str) -> torch.Tensor:
        """The ``(out, in)`` matrix of one module's update."""
        left, right = self.factors[name]
        return left @ right.T


def combined(*updates: LowRankUpdate | None) -> LowRankUpdate | None:
    """The sum of the updates that are not None (None when none is)."""
    present = [u for u in updates if u is not None]
    if not present:
        return None
    total = present[0]
    for update in present[1:]:
        total = total + update
    return total


class RowUpdates(contextlib.AbstractContextManager):
    """Within the block, batch row ``b`` goes through the model with ``updates[groups[b]]`` added to its weights.

    Set :attr:`groups` (one group index per batch row, a tensor or list)
    before each forward pass; ``None`` sends every row through ``updates[0]``.
    A group whose update is ``None`` sees the unedited model. The hooks are
    removed on leaving the block, whatever happens inside. Gradients flow
    through them like through a written weight.
    """

    def __init__(self, model: torch.nn.Module, updates: Sequence[LowRankUpdate | None]) -> None:
        self.groups: torch.Tensor | Sequence[int] | None = None
        self._handles = []
        names = sorted({name for update in updates if update is not None for name in update.factors})
        try:
            for name in names:
                per_group = [(g, *u.factors[name]) for g, u in enumerate(updates) if u is not None and name in u.factors]
                self._handles.append(get_module(model, name).register_forward_hook(self._hook(per_group)))
        except BaseException:
            self.close()
            raise

    def _hook(self, per_group: list[tuple[int, torch.Tensor, torch.Tensor]]):
        def add_updates(_module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            x = inputs[0]
            if self.groups is None:
                for group, left, right in per_group:
                    if group == 0:
                        return output + ((x @ right.to(x.dtype)) @ left.T.to(x.dtype)).to(output.dtype)
                return output
            groups = torch.as_tensor(self.groups, device=x.device)
            change = torch.zeros_like(output)
            for group, left, right in per_group:
                rows = (groups == group).nonzero().flatten()
                if len(rows):
                    change = change.index_add(0, rows, ((x[rows] @ right.to(x.dtype)) @ left.T.to(x.dtype)).to(output.dtype))
            return output + change

        return add_updates

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def uniform_update(model: torch.nn.Module, update: LowRankUpdate | None) -> contextlib.AbstractContextManager:
    """Every row of every forward pass in the block sees ``update`` (nothing when it is None)."""
    return RowUpdates(model, [update]) if update is not None else contextlib.nullcontext()
