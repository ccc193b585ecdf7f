"""The floor an editor is written on: the public names of the editor contract and the primitives editors use.

    from pitfalls_editkit import Editor, EditorSettings, Edit, LoadedModel, ALL_PARAMETERS

* ``contract``: :class:`Editor` (what an editor implements), :class:`ModuleEditor` (an editor that adds patches
  instead of overwriting weights), :class:`EditorSettings`, ``ALL_PARAMETERS``, ``capabilities``, ``declared_names``;
* ``patches``: :class:`Patch` (a module editor's computation at one module, installed by the harness);
* ``facts``: :class:`Edit`, :class:`Entity`, :class:`Relation`, :class:`Fact`, ``fill`` (prompt templates);
* ``models``: :class:`LoadedModel` (model, tokenizer, device, family, fingerprint), ``load_model``;
* ``nethook``: ``Trace`` (a reversible hook), ``get_module``;
* ``low_rank``: ``LowRankUpdate`` (an update as factors), ``RowUpdates`` (each batch row sees its own update),
  ``weight_update``, ``out_in_shape``, ``combined``;
* ``scoring``: ``Scorer``, ``encode_completion``, ``pad_batch``, ``vocabulary_logits``;
* ``hparams``: flat hyper-parameter dataclasses read from JSON (``load_hparams``, ``bounded``, ``as_dict``),
  ``module_name``, ``check_modules`` and ``check_templates`` for module-name templates;
* ``fingerprints``: per-tensor fingerprints and ``parameter_digest`` (exact-undo proofs);
* ``cache``: the on-disk cache shared by workers.

Nothing here imports the harness, the editors or the reports (the floors above).
Names are resolved on first use, so ``import pitfalls_editkit.facts`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "ALL_PARAMETERS": "pitfalls_editkit.contract", "Editor": "pitfalls_editkit.contract", "EditorSettings": "pitfalls_editkit.contract",
    "Edit": "pitfalls_editkit.facts", "Entity": "pitfalls_editkit.facts", "Fact": "pitfalls_editkit.facts", "Relation": "pitfalls_editkit.facts", "fill": "pitfalls_editkit.facts",
    "LoadedModel": "pitfalls_editkit.models", "load_model": "pitfalls_editkit.models", "resolve_device": "pitfalls_editkit.models",
    "Trace": "pitfalls_editkit.nethook", "get_module": "pitfalls_editkit.nethook",
    "LowRankUpdate": "pitfalls_editkit.low_rank", "RowUpdates": "pitfalls_editkit.low_rank", "weight_update": "pitfalls_editkit.low_rank",
    "Scorer": "pitfalls_editkit.scoring", "encode_completion": "pitfalls_editkit.scoring", "pad_batch": "pitfalls_editkit.scoring",
    "vocabulary_logits": "pitfalls_editkit.scoring",
    "HyperParamsError": "pitfalls_editkit.hparams", "load_hparams": "pitfalls_editkit.hparams", "module_name": "pitfalls_editkit.hparams",
    "bounded": "pitfalls_editkit.hparams", "as_dict": "pitfalls_editkit.hparams", "check_modules": "pitfalls_editkit.hparams",
    "check_templates": "pitfalls_editkit.hparams",
    "parameter_digest": "pitfalls_editkit.fingerprints", "parameter_fingerprints": "pitfalls_editkit.fingerprints",
    "capabilities": "pitfalls_editkit.contract", "declared_names": "pitfalls_editkit.contract",
    "out_in_shape": "pitfalls_editkit.low_rank", "combined": "pitfalls_editkit.low_rank",
    "Encoded": "pitfalls_editkit.scoring", "StopForward": "pitfalls_editkit.nethook", "TemplateError": "pitfalls_editkit.facts",
    "ModelLoadError": "pitfalls_editkit.presets",
    "ModuleEditor": "pitfalls_editkit.contract", "Patch": "pitfalls_editkit.patches",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pitfalls_editkit' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
