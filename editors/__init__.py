"""Editing methods. ``make_editor`` turns ``--editor NAME`` into an editor bound to a model."""

from __future__ import annotations

import importlib

from editors.base import Editor, EditorSettings
from harness.models import LoadedModel

# name -> "module:class"; imported only when chosen, so an editor's cost is paid only by its users.
EDITORS = {
    "rome": "editors.rome:ROME",
    "memit": "editors.memit:MEMIT",
    "ft": "editors.ft:FT",
    "mend": "editors.mend.editor:MEND",
}


class UnknownEditorError(ValueError):
    """``--editor`` names no known method."""


def editor_class(name: str) -> type[Editor]:
    if name not in EDITORS:
        raise UnknownEditorError(f"--editor {name!r}: unknown editor (known: {', '.join(sorted(EDITORS))})")
    module_name, class_name = EDITORS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_editor(name: str, loaded: LoadedModel, settings: EditorSettings) -> Editor:
    return editor_class(name)(loaded, settings)
