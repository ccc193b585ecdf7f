"""Networks trained by the original MEND code (eric-mitchell/mend), mapped onto ours.

The reference edits GPT-2 XL and GPT-J with ``mend-10tok-gpt2-xl.pt`` and
``mend-10tok-gpt-j-6b.pt``: the original trainer's checkpoint, whose
``"model"`` entry is the MEND wrapper's state dict (older files spell
``mend.`` as ``gtn.``). With the published configuration (``combine``,
``shared``, ``IDMLP``, ``n_hidden`` 1, ``norm``) one transform per weight
shape ``(in, out)`` holds

* ``mend.(in, out).{u,v}_mean``, ``{u,v}_s`` (sums of squared deviations),
  ``k`` (count): the input normalisation, ``u`` = layer inputs, ``v`` = output
  gradients;
* ``mend.(in, out).mlp.layers.<i>.{u, v, bias, mode_scale.weight, mode_shift.weight}``:
  low-rank residual layers ``x + relu(((x v^T) u^T + bias) * scale + shift)``,
  the ReLU in every layer;
* ``edit_lrs``: one step per edited weight, in the model's parameter order,
  applied as ``W + lr * delta~^T u~``.

Ours is the same network (``relu_last`` for the last ReLU) with our names;
the only other difference is the sign convention of the step (ours is
``W - lr * ...``), so the mapped steps are negated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from editors.mend.network import MENDNetwork
from pitfalls_editkit.messages import first_line


class OriginalCheckpointError(ValueError):
    """A file that is not an original MEND network for these weights; the message names the file."""


def load_checkpoint_file(path: Path) -> Any:
    """A MEND checkpoint, ours or the original's, loaded with ``weights_only=True``.

    The original pickles the model's config beside its tensors; transformers' GPT-2 / GPT-J config classes are the
    one kind of object allowed besides tensors.
    """
    from transformers import GPT2Config, GPTJConfig

    try:
        with torch.serialization.safe_globals([GPT2Config, GPTJConfig]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling error names the object it refused
        raise OriginalCheckpointError(f"MEND checkpoint {path}: cannot be loaded with weights_only=True "
                                      f"({first_line(exc, 300)})") from None


def original_tensors(raw: Any, path: Path) -> dict[str, torch.Tensor] | None:
    """The MEND tensors (``mend.`` keys) of an original checkpoint, or None when ``raw`` is one of ours."""
    if isinstance(raw, dict) and ("network" in raw or "best_network" in raw):
        return None
    state = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise OriginalCheckpointError(f"MEND checkpoint {path}: not a state dict")
    tensors = {key.replace("gtn.", "mend.", 1): value for key, value in state.items()
               if isinstance(value, torch.Tensor) and not key.startswith("model.")}
    if not any(key.startswith("mend.") for key in tensors):
        raise OriginalCheckpointError(f"MEND checkpoint {path}: has neither our 'network' nor the original's 'mend.' entries")
    return tensors


def original_shape_key(in_dim: int, out_dim: int) -> str:
    """How the original names a shared transform: ``str(tuple(shape))`` with the shape as ``(in, out)``."""
    return str((in_dim, out_dim))


def map_original(tensors: dict[str, torch.Tensor], network: MENDNetwork, parameter_order: list[str], path: Path) -> dict[str, Any]:
    """Our ``network``'s state dict filled from the original's ``tensors``.

    ``parameter_order``: the edited weights' names (``<module>.weight``) in the model's parameter order, which
    is the order of the original's ``edit_lrs``.
    """
    def take(key: str, shape: torch.Size) -> torch.Tensor:
        if key not in tensors:
            raise OriginalCheckpointError(f"MEND checkpoint {path}: has no {key!r}; was it trained for other layers or "
                                          "another configuration than the published one (combine, shared, IDMLP)?")
        value = tensors[key]
        if value.numel() != torch.Size(shape).numel():
            raise OriginalCheckpointError(f"MEND checkpoint {path}: {key} has shape {tuple(value.shape)}, this model needs "
                                          f"{tuple(shape)}: it was trained for another model or rank")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise OriginalCheckpointError(f"MEND checkpoint {path}: {key} holds NaN or infinite values; the file is damaged")
        return value.reshape(shape)

    ours = network.state_dict()
    mapped: dict[str, Any] = {}
    for shape_key, transform in network.transforms.items():
        source = f"mend.{original_shape_key(transform.in_dim, transform.out_dim)}"
        base = f"transforms.{shape_key}"
        for name, original in (("u_mean", "u_mean"), ("u_m2", "u_s"), ("d_mean", "v_mean"), ("d_m2", "v_s")):
            mapped[f"{base}.{name}"] = take(f"{source}.{original}", ours[f"{base}.{name}"].shape).float()
        mapped[f"{base}.count"] = take(f"{source}.k", torch.Size([])).to(torch.float64)
        for i in range(len(transform.layers)):
            layer, original = f"{base}.layers.{i}", f"{source}.mlp.layers.{i}"
            for name, original_name in (("down", "v"), ("up", "u"), ("bias", "bias"), ("mode_scale", "mode_scale.weight"),
                                        ("mode_shift", "mode_shift.weight")):
                mapped[f"{layer}.{name}"] = take(f"{original}.{original_name}", ours[f"{layer}.{name}"].shape).float()
        if f"{source}.mlp.layers.{len(transform.layers)}.u" in tensors:
            raise OriginalCheckpointError(f"MEND checkpoint {path}: has more layers than n_hidden + 1 = {len(transform.layers)}")
    steps = take("edit_lrs", torch.Size([len(parameter_order)])).float()
    mapped["edit_lrs"] = torch.stack([-steps[parameter_order.index(f"{name}.weight")] for name in network.param_names])
    return mapped
