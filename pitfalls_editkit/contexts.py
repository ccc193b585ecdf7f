"""Context editors' edits: what the model is given before each prompt, installed, journaled and removed by the harness.

A context editor (``Editor.kind = "context"``, IKE) leaves the weights alone: its ``apply`` returns a
:class:`Context`, the text transform every scoring call (and generation) applies to a prompt while the edit is in
force. The harness, not the editor, holds it in an :class:`InstalledContext` that the scorer reads, copies it
before each edit (a failed edit in a chain is rolled back to it), clears it when the case or the chain ends, and
proves the weights untouched as for every editor.
"""

from __future__ import annotations

import copy
from typing import Any


class Context:
    """What the model is given in place of a prompt while an edit is in force: :meth:`apply` maps the prompt.

    Keep the editor's edit state (the facts stated, the demonstrations drawn) on the context object: the harness
    copies it before each edit and puts it back, in place, when an edit of a chain fails.
    """

    def apply(self, prompt: str) -> str:  # pragma: no cover - the contract's shape
        raise NotImplementedError


class ContextError(ValueError):
    """What a context editor's ``apply`` returned cannot be installed; the message names it."""


class InstalledContext:
    """The context in force on one model's inputs (None: the prompt as it is); the scorer reads it."""

    def __init__(self) -> None:
        self.current: Context | None = None

    def install(self, editor_name: str, returned: Any) -> None:
        if not isinstance(returned, Context):
            raise ContextError(f"editor {editor_name!r} is a context editor: apply() must return a Context, "
                               f"got {type(returned).__name__}")
        self.current = returned

    def prompt(self, prompt: str) -> str:
        """``prompt`` as the model is given it now."""
        if self.current is None:
            return prompt
        given = self.current.apply(prompt)
        if not isinstance(given, str):
            raise ContextError(f"the installed context {type(self.current).__name__} returned {type(given).__name__} "
                               "for a prompt, not text")
        return given

    def snapshot(self) -> tuple[Context | None, Context | None]:
        """The context now, with a copy of its state, to roll back to."""
        return self.current, copy.deepcopy(self.current)

    def roll_back(self, snapshot: tuple[Context | None, Context | None]) -> None:
        """Put the context back as it was at ``snapshot``, in place (an editor may keep a reference to it)."""
        context, saved = snapshot
        if context is not None and saved is not None:
            context.__dict__.clear()
            context.__dict__.update(copy.deepcopy(saved).__dict__)
        self.current = context

    def remove(self) -> None:
        self.current = None
