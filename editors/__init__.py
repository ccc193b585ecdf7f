"""Editing methods: ROME, MEMIT, FT, MEND, and the registry that turns ``--editor`` into one of them or a plugin's.

Every editor here is written against the public contract in ``pitfalls_editkit`` (the
floor below), exactly as a plugin's editor would be.
"""

from editors.registry import ENTRY_POINT_GROUP, SHIPPED, UnknownEditorError, available, editor_class, make_editor

__all__ = ["ENTRY_POINT_GROUP", "SHIPPED", "UnknownEditorError", "available", "editor_class", "make_editor"]
