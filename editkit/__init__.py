"""The floor an editor is written on: the public names of the editor contract and the primitives editors use.

    from editkit import Editor, EditorSettings, Edit, LoadedModel, ALL_PARAMETERS

* ``contract``: :class:`Editor` (what an editor implements), :class:`EditorSettings`, ``ALL_PARAMETERS``,
  ``capabilities``, ``declared_names``;
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
Names are resolved on first use, so ``import editkit.facts`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "ALL_PARAMETERS": "editkit.contract", "Editor": "editkit.contract", "EditorSettings": "editkit.contract",
    "Edit": "editkit.facts", "Entity": "editkit.facts", "Fact": "editkit.facts", "Relation": "editkit.facts", "fill": "editkit.facts",
    "LoadedModel": "editkit.models", "load_model": "editkit.models", "resolve_device": "editkit.models",
    "Trace": "editkit.nethook", "get_module": "editkit.nethook",
    "LowRankUpdate": "editkit.low_rank", "RowUpdates": "editkit.low_rank", "weight_update": "editkit.low_rank",
    "Scorer": "editkit.scoring", "encode_completion": "editkit.scoring", "pad_batch": "editkit.scoring",
    "vocabulary_logits": "editkit.scoring",
    "HyperParamsError": "editkit.hparams", "load_hparams": "editkit.hparams", "module_name": "editkit.hparams",
    "bounded": "editkit.hparams", "as_dict": "editkit.hparams", "check_modules": "editkit.hparams",
    "check_templates": "editkit.hparams",
    "parameter_digest": "editkit.fingerprints", "parameter_fingerprints": "editkit.fingerprints",
    "capabilities": "editkit.contract", "declared_names": "editkit.contract",
    "out_in_shape": "editkit.low_rank", "combined": "editkit.low_rank",
    "Encoded": "editkit.scoring", "StopForward": "editkit.nethook", "TemplateError": "editkit.facts",
    "ModelLoadError": "editkit.presets",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'editkit' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
