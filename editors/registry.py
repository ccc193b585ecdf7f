"""Which class ``--editor SPEC`` names: a shipped editor, one an installed package registers, or ``module:Class``.

* Shipped: the table ``SHIPPED`` below.
* Registered: any installed distribution may declare, in its ``pyproject.toml``,
  ``[project.entry-points."pitfalls_harness.editors"]  myedit = "my_package.editing:MyEditor"``.
* Any importable class: ``--editor my_package.editing:MyEditor``.

Editor modules are imported only when chosen, so an editor's cost (and its
imports) is paid only by its users.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from pitfalls_editkit.messages import first_line

if TYPE_CHECKING:  # the registry is read when pytest starts: it must not import torch
    from pitfalls_editkit.contract import Editor, EditorSettings
    from pitfalls_editkit.models import LoadedModel

ENTRY_POINT_GROUP = "pitfalls_harness.editors"

# name -> "module:Class", in the order tables and reports list them (the paper's four, then their descendants)
SHIPPED = {
    "ft": "editors.ft:FT",
    "mend": "editors.mend.editor:MEND",
    "rome": "editors.rome:ROME",
    "r-rome": "editors.r_rome:RROME",
    "memit": "editors.memit:MEMIT",
    "emmet": "editors.emmet:EMMET",
    "alphaedit": "editors.alphaedit:AlphaEdit",
    "grace": "editors.grace:GRACE",
    "ike": "editors.ike:IKE",
    "wise": "editors.wise:WISE",
    "lora": "editors.lora:LoRA",
}


def editor_order(label: str) -> tuple[int, str]:
    """Sort key of a run's editor label (``memit``, ``memit+MLE``, a plugin's name): shipped order, MLE after its editor."""
    base, _, variant = label.partition("+")
    names = list(SHIPPED)
    return (names.index(base.lower()) * 2 + bool(variant) if base.lower() in names else 2 * len(names), label.lower())


class UnknownEditorError(ValueError):
    """``--editor`` names no editor that can be loaded; the message says what is available."""


def registered() -> dict[str, str]:
    """Editors that installed distributions register under our entry-point group: name -> "module:Class"."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """Every editor ``--editor NAME`` can name; a shipped name wins over a registered one."""
    return {**registered(), **SHIPPED}


def _import_class(target: str, spec: str) -> type:
    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise UnknownEditorError(f"--editor {spec!r}: expected NAME or module.path:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownEditorError(f"--editor {spec!r}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # the plugin's own code failed while it was imported: name it, no traceback
        raise UnknownEditorError(f"--editor {spec!r}: importing module {module_name!r} raised {type(exc).__name__}: "
                                 f"{first_line(exc, 300)}; fix that module") from None
    value = module
    for part in class_name.split("."):
        if not hasattr(value, part):
            raise UnknownEditorError(f"--editor {spec!r}: module {module_name!r} has no {class_name!r}")
        value = getattr(value, part)
    return value


def editor_class(spec: str) -> type[Editor]:
    """The editor class ``spec`` names, checked against the contract's class-level part."""
    known = available()
    if spec in known:
        target = known[spec]
    elif ":" in spec:
        target = spec
    else:
        raise UnknownEditorError(
            f"--editor {spec!r}: unknown editor (known: {', '.join(sorted(known))}; or give module.path:ClassName)"
        )
    cls = _import_class(target, spec)
    from pitfalls_editkit.contract import Editor

    if not (isinstance(cls, type) and issubclass(cls, Editor)):
        raise UnknownEditorError(f"--editor {spec!r}: {target} is not a subclass of pitfalls_editkit.Editor")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise UnknownEditorError(f"--editor {spec!r}: {target} must set a class attribute name = '...'")
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        raise UnknownEditorError(f"--editor {spec!r}: {target} does not implement {', '.join(abstract)}")
    return cls


def make_editor(spec: str, loaded: LoadedModel, settings: EditorSettings) -> Editor:
    return editor_class(spec)(loaded, settings)
