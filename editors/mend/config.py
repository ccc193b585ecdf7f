"""MEND's hyper-parameters, the network they shape, and where its trained checkpoints are.

Read by both the editor (``editor.py``) and the trainer (``train.py``), so
neither imports the other's module for them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from editors.mend.network import MENDNetwork
from editors.mend.original import load_checkpoint_file, map_original, original_tensors
from pitfalls_editkit.hparams import bounded, module_name
from pitfalls_editkit.low_rank import out_in_shape
from pitfalls_editkit.models import LoadedModel
from pitfalls_editkit.nethook import get_module

HPARAMS_DIR = Path(__file__).parents[1] / "hparams" / "mend"
CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"


@dataclass(frozen=True)
class MENDHyperParams:
    layers: list[int] = bounded(nonempty=True)  # negative counts from the end; the editor checks the model's depth
    module_tmps: list[str] = bounded(nonempty=True)  # the edited weights: each template at each layer
    rank: int = bounded(1)  # of the low-rank residual layers
    n_hidden: int = bounded(0)
    edit_lr: float = bounded(above=0)  # initial per-layer step
    lr: float = bounded(above=0)  # Adam, editor network
    lr_lr: float = bounded(0)  # Adam, per-layer steps
    cedit: float = bounded(0)
    cloc: float = bounded(0)
    batch_size: int = bounded(1)
    train_steps: int = bounded(1)
    val_every: int = bounded(1)
    checkpoint: str  # file name under editors/mend/checkpoints/ (shipped) or the cache's mend/ folder; or a path (ours or the original's)


def module_names(hp: MENDHyperParams) -> list[str]:
    return [module_name(tmp, layer) for layer in hp.layers for tmp in hp.module_tmps]


def build_network(loaded: LoadedModel, hp: MENDHyperParams, relu_last: bool = False) -> MENDNetwork:
    shapes = {name: out_in_shape(get_module(loaded.model, name)) for name in module_names(hp)}
    return MENDNetwork(shapes, hp.rank, hp.edit_lr, hp.n_hidden, relu_last).to(loaded.device)


# What a trained network depends on besides the model: another value needs another network.
NETWORK_FIELDS = ("layers", "module_tmps", "rank", "n_hidden", "edit_lr", "lr", "lr_lr", "cedit", "cloc", "batch_size", "train_steps")


def network_key(hp: MENDHyperParams) -> str:
    """A short hash of the hyper-parameters a trained network depends on (keys the cached checkpoints)."""
    values = json.dumps({name: getattr(hp, name) for name in NETWORK_FIELDS}, sort_keys=True)
    return hashlib.sha256(values.encode()).hexdigest()[:10]


def given_checkpoint(hp: MENDHyperParams) -> Path | None:
    """A ``checkpoint`` that is a path (``~/mend-10tok-gpt2-xl.pt``, ``/data/net.pt``) names the one file to use."""
    if "/" in hp.checkpoint or hp.checkpoint.startswith("~"):
        return Path(hp.checkpoint).expanduser()
    return None


def checkpoint_paths(hp: MENDHyperParams, cache_dir: Path, fingerprint: str) -> list[Path]:
    """Where a checkpoint is looked for: a given path only; else shipped first, then the cache (keyed by the model's
    weights and the hyper-parameters)."""
    given = given_checkpoint(hp)
    if given is not None:
        return [given]
    return [CHECKPOINT_DIR / hp.checkpoint, cache_dir / "mend" / f"{fingerprint}-{network_key(hp)}-{hp.checkpoint}"]


class CheckpointMismatch(ValueError):
    """A checkpoint trained for other layers, weights or network sizes than the hyper-parameters ask for."""


def load_network(path: Path, loaded: LoadedModel, hp: MENDHyperParams) -> MENDNetwork:
    """Our checkpoint, or an original MEND network mapped onto ours (``network.original`` says which)."""
    state = load_checkpoint_file(path)
    tensors = original_tensors(state, path)
    if tensors is not None:
        network = build_network(loaded, hp, relu_last=True)
        edited = {f"{name}.weight" for name in module_names(hp)}
        order = [name for name, _ in loaded.model.named_parameters() if name in edited]
        network.load_state_dict(map_original(tensors, network.cpu(), order, path))
        network.original = True
        return network.to(loaded.device)
    if state.get("model_fingerprint") not in (None, loaded.fingerprint):
        print(f"note: MEND checkpoint {path} was trained on model fingerprint {state['model_fingerprint']}, this model's is "
              f"{loaded.fingerprint} (the fingerprint covers the weights and the config, which names the transformers "
              "version: a newer transformers alone changes it)", file=sys.stderr)
    trained = state.get("hparams") or {}
    if "layers" in trained:  # family files count from the end: compare as layer indices of this model
        trained = {**trained, "layers": [layer % loaded.num_layers for layer in trained["layers"]]}
    differs = [name for name in ("layers", "module_tmps", "rank", "n_hidden") if name in trained and trained[name] != getattr(hp, name)]
    if differs:
        name = differs[0]
        raise CheckpointMismatch(f"MEND checkpoint {path} was trained with {name}={trained[name]}, but the hyper-parameters ask "
                                 f"for {name}={getattr(hp, name)}: train one (python -m editors.mend.train) or change the checkpoint")
    network = build_network(loaded, hp)
    network.load_state_dict(state.get("best_network") or state["network"])  # the best validated network, else the last
    return network
