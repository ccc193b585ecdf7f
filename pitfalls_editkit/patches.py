"""Module editors' computation: patches the harness installs at named modules, journals, and removes.

A module editor (``Editor.kind = "modules"``) does not overwrite weights: its
``apply`` returns :class:`Patch` objects keyed by module name (GRACE's codebook
around one layer, a side memory, an adapter). The harness, not the editor,
installs each one as a forward hook on its module through
:class:`InstalledPatches`, so every forward pass (scoring, batched scoring,
generation) runs through it. The harness keeps a copy of every patch before each
edit (a failed edit in a chain is rolled back to it), removes every hook when
the case or the chain ends, and proves the model original again.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle


class Patch(torch.nn.Module):
    """Computation added at one module: ``forward(inputs, output)`` returns the module's output as patched.

    Keep what the patch needs (keys, values, radii, adapter factors) as its own buffers or parameters, created
    on the model's device; never hold a reference to a tensor of the model and change it. A patch that decides per
    sequence (WISE's router) sets ``takes_attention_mask = True`` and is called ``forward(inputs, output,
    attention_mask=...)`` with the mask the model's forward pass was given (``(batch, columns)``, the last columns
    the module's; None when the caller gave none: every position is a real token).
    """

    takes_attention_mask = False

    def forward(self, inputs: tuple[Any, ...], output: Any) -> Any:  # pragma: no cover - the contract's shape
        raise NotImplementedError


class PatchError(ValueError):
    """What a module editor's ``apply`` returned cannot be installed; the message names it."""


class InstalledPatches:
    """The patches on one model, each a forward hook the harness registered (and only the harness removes)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.patches: dict[str, Patch] = {}
        self._handles: dict[str, RemovableHandle] = {}
        self.attention_mask: torch.Tensor | None = None  # of the forward pass running now (read by a pre-hook)
        self._mask_hook: tuple[str, RemovableHandle] | None = None

    def install(self, editor_name: str, returned: Any) -> None:
        """Install what ``apply`` returned: a mapping of module name to :class:`Patch` (a patch already installed at
        that module may be returned again, changed in place; another object replaces it)."""
        if not isinstance(returned, Mapping):
            raise PatchError(f"editor {editor_name!r} is a module editor: apply() must return a mapping of module name to "
                             f"Patch, got {type(returned).__name__}")
        modules = dict(self.model.named_modules())
        for name, patch in returned.items():
            if not isinstance(patch, Patch):
                raise PatchError(f"editor {editor_name!r}: apply() returned {type(patch).__name__} for {name!r}, not a Patch")
            if name not in modules or not name:
                raise PatchError(f"editor {editor_name!r}: apply() returned a patch for {name!r}, which is not a module of "
                                 "the model")
            if self.patches.get(name) is patch:
                continue
            if name in self._handles:
                self._handles.pop(name).remove()
            self.patches[name] = patch
            self._handles[name] = modules[name].register_forward_hook(self._run_patch(patch))
            if patch.takes_attention_mask and self._mask_hook is None:
                self._mask_hook = self._watch_attention_mask()

    def hook_keys(self) -> set[tuple[str, str, int]]:
        """The hooks the harness owns, as ``harness.guard.ModelState`` names hooks."""
        keys = {(name, "_forward_hooks", handle.id) for name, handle in self._handles.items()}
        if self._mask_hook is not None:
            keys.add((self._mask_hook[0], "_forward_pre_hooks", self._mask_hook[1].id))
        return keys

    def _watch_attention_mask(self) -> tuple[str, RemovableHandle]:
        """A pre-hook on the model's body (which scoring, training and generation all call) keeping its attention mask."""
        from pitfalls_editkit.scoring import transformer_body

        body = transformer_body(self.model)
        name = next(n for n, module in self.model.named_modules() if module is body)

        def keep(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            self.attention_mask = kwargs.get("attention_mask")

        return name, body.register_forward_pre_hook(keep, with_kwargs=True)

    def _run_patch(self, patch: Patch):
        def hook(module: torch.nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
            if patch.takes_attention_mask:
                return patch(inputs, output, attention_mask=self.attention_mask)
            return patch(inputs, output)
        return hook

    def snapshot(self) -> dict[str, tuple[Patch, Patch]]:
        """Every patch now, with a copy of its state (its tensors cloned), to roll back to."""
        return {name: (patch, copy.deepcopy(patch)) for name, patch in self.patches.items()}

    def roll_back(self, editor_name: str, snapshot: dict[str, tuple[Patch, Patch]]) -> None:
        """Put the patches back as they were at ``snapshot``, in place: the same objects (an editor keeps references
        to its patches) with their state copied back; patches added since are removed."""
        self.remove_all()
        for patch, saved in snapshot.values():
            patch.__dict__.clear()
            patch.__dict__.update(copy.deepcopy(saved).__dict__)
        self.install(editor_name, {name: patch for name, (patch, _) in snapshot.items()})

    def remove_all(self) -> None:
        for handle in self._handles.values():
            handle.remove()
        if self._mask_hook is not None:
            self._mask_hook[1].remove()
            self._mask_hook, self.attention_mask = None, None
        self._handles.clear()
        self.patches.clear()

    def __len__(self) -> int:
        return len(self.patches)

