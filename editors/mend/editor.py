"""``--editor mend``: edit with a trained MEND network (see network.py, train.py).

The network is specific to a model: it is read from the checkpoint named in
the hyper-parameters (shipped under ``editors/mend/checkpoints/`` for the
default model), else from the cache, else trained on first use on the
generated geography dataset with a message saying so (minutes on CPU for the
tiny models; ``python -m editors.mend.train`` for anything larger).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from editors.base import Editor, EditorSettings, keep_originals
from editors.hparams import HyperParamsError, as_dict, check_modules, editor_hparams
from editors.mend.gradients import edit_batch, gradient_factors
from editors.mend.network import MENDNetwork
from editors.representations import out_in_shape, weight_update
from harness.datasets import Edit
from harness.models import LoadedModel
from harness.nethook import get_module

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"


@dataclass(frozen=True)
class MENDHyperParams:
    layers: list[int]
    module_tmps: list[str]  # the edited weights: each template at each layer
    rank: int  # of the low-rank residual layers
    n_hidden: int
    edit_lr: float  # initial per-layer step
    lr: float  # Adam, editor network
    lr_lr: float  # Adam, per-layer steps
    cedit: float
    cloc: float
    batch_size: int
    train_steps: int
    val_every: int
    checkpoint: str  # file name under editors/mend/checkpoints/ (shipped) or the cache's mend/ folder


def module_names(hp: MENDHyperParams) -> list[str]:
    return [tmp.format(layer) for layer in hp.layers for tmp in hp.module_tmps]


def build_network(loaded: LoadedModel, hp: MENDHyperParams) -> MENDNetwork:
    shapes = {name: out_in_shape(get_module(loaded.model, name)) for name in module_names(hp)}
    return MENDNetwork(shapes, hp.rank, hp.edit_lr, hp.n_hidden).to(loaded.device)


def checkpoint_paths(hp: MENDHyperParams, cache_dir: Path, fingerprint: str) -> list[Path]:
    """Where a checkpoint is looked for: shipped first, then the cache (keyed by the model's weights)."""
    return [CHECKPOINT_DIR / hp.checkpoint, cache_dir / "mend" / f"{fingerprint}-{hp.checkpoint}"]


def load_network(path: Path, loaded: LoadedModel, hp: MENDHyperParams) -> MENDNetwork:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("model_fingerprint") not in (None, loaded.fingerprint):
        print(f"note: MEND checkpoint {path} was trained on weights {state['model_fingerprint']}, "
              f"this model's are {loaded.fingerprint}", file=sys.stderr)
    network = build_network(loaded, hp)
    network.load_state_dict(state.get("best_network") or state["network"])  # the best validated network, else the last
    return network


class MEND(Editor):
    name = "mend"
    supports_batch = True

    def __init__(self, loaded: LoadedModel, settings: EditorSettings, network: MENDNetwork | None = None) -> None:
        super().__init__(loaded, settings)
        self.hparams_path, hp = editor_hparams("mend", MENDHyperParams, loaded, settings.hparams_file)
        # Family files count layers from the end (-1 = last), as models of one family differ in depth.
        self.hparams = dataclasses.replace(hp, layers=[layer % loaded.num_layers for layer in hp.layers])
        check_modules(self.hparams_path, loaded.model, {f"module_tmps[{i}]": t for i, t in enumerate(self.hparams.module_tmps)},
                      self.hparams.layers)
        if self.hparams.rank < 1 or self.hparams.batch_size < 1:
            raise HyperParamsError(f"{self.hparams_path}: rank and batch_size must be at least 1")
        self.checkpoint: Path | None = None
        self.network = network if network is not None else self._trained_network()
        self.network.eval()

    def _trained_network(self) -> MENDNetwork:
        for path in checkpoint_paths(self.hparams, self.settings.cache_dir, self.loaded.fingerprint):
            if path.is_file():
                self.checkpoint = path
                return load_network(path, self.loaded, self.hparams)
        from editors.mend.train import train_on_first_use

        self.checkpoint = train_on_first_use(self.loaded, self.hparams, self.settings)
        return load_network(self.checkpoint, self.loaded, self.hparams)

    def describe(self) -> dict[str, Any]:
        return {"hparams_file": str(self.hparams_path), "hparams": as_dict(self.hparams), "checkpoint": str(self.checkpoint)}

    def apply(self, edits: Sequence[Edit]) -> dict[str, torch.Tensor]:
        names = module_names(self.hparams)
        factors = gradient_factors(self.loaded, edit_batch(self.loaded, edits), names)
        with torch.no_grad():
            updates = self.network(factors)
        originals: dict[str, torch.Tensor] = {}
        keep_originals(self.loaded.model, [f"{n}.weight" for n in names], originals)
        with torch.no_grad():
            for name, update in updates.items():
                if not torch.isfinite(update).all():
                    raise FloatingPointError(f"MEND: non-finite update at {name} for {edits[0].describe()}")
                module = get_module(self.loaded.model, name)
                module.weight += weight_update(module, update).to(module.weight.dtype)
        return originals
