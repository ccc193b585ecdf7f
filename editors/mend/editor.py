"""``--editor mend``: edit with a trained MEND network (see network.py, train.py).

The network is specific to a model: it is read from the checkpoint named in
the hyper-parameters (shipped under ``editors/mend/checkpoints/`` for the
default model), else from the cache, else trained on first use on the
generated geography dataset with a message saying so (minutes on CPU for the
tiny models; ``python -m editors.mend.train`` for anything larger).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from editors.mend.config import HPARAMS_DIR, MENDHyperParams, checkpoint_paths, given_checkpoint, load_network, module_names
from editors.mend.gradients import edit_batch, gradient_factors
from editors.mend.network import MENDNetwork
from pitfalls_editkit.contract import Editor, EditorSettings
from pitfalls_editkit.facts import Edit
from pitfalls_editkit.hparams import HyperParamsError, as_dict
from pitfalls_editkit.low_rank import weight_update
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import get_module


class MEND(Editor):
    name = "mend"
    supports_batch = True
    hparams_dir = HPARAMS_DIR

    def __init__(self, loaded: LoadedModel, settings: EditorSettings, network: MENDNetwork | None = None) -> None:
        super().__init__(loaded, settings)
        self.hparams_path, hp = self.load_hparams(MENDHyperParams)
        # Family files count layers from the end (-1 = last), as models of one family differ in depth.
        depth = loaded.num_layers
        outside = [layer for layer in hp.layers if not -depth <= layer < depth]
        if not hp.layers or outside:
            raise HyperParamsError(f"{self.hparams_path}: layers {hp.layers}: each must be in {-depth}..{depth - 1} "
                                   f"(the model has {depth} layers; negative counts from the end)")
        self.hparams = dataclasses.replace(hp, layers=[layer % depth for layer in hp.layers])  # module_tmps: checked on load
        self.checkpoint: Path | None = None
        self.network = network if network is not None else self._trained_network()
        self.network.eval()

    def _trained_network(self) -> MENDNetwork:
        for path in checkpoint_paths(self.hparams, self.settings.cache_dir, self.loaded.fingerprint):
            if path.is_file():
                self.checkpoint = path
                return load_network(path, self.loaded, self.hparams)
        if given_checkpoint(self.hparams) is not None:
            raise HyperParamsError(f"{self.hparams_path}: checkpoint {self.hparams.checkpoint}: no such file (give the path of "
                                   "a MEND network: ours, or the original's mend-10tok-*.pt)")
        from editors.mend.train import train_on_first_use

        self.checkpoint = train_on_first_use(self.loaded, self.hparams, self.settings)
        return load_network(self.checkpoint, self.loaded, self.hparams)

    def describe(self) -> dict[str, Any]:
        return {"hparams_file": str(self.hparams_path), "hparams": as_dict(self.hparams), "checkpoint": str(self.checkpoint),
                "original_network": self.network.original}

    def declared_parameters(self) -> list[str]:
        return [f"{name}.weight" for name in module_names(self.hparams)]

    def apply(self, edits: Sequence[Edit]) -> None:
        names = module_names(self.hparams)
        factors = gradient_factors(self.loaded, edit_batch(self.loaded, edits), names)
        with torch.no_grad():
            updates = self.network(factors)
        with torch.no_grad():
            for name, update in updates.items():
                if not torch.isfinite(update).all():
                    raise FloatingPointError(f"MEND: non-finite update at {name} for {edits[0].describe()}")
                module = get_module(self.loaded.model, name)
                module.weight += weight_update(module, update).to(module.weight.dtype)
