"""Fingerprints of a model's tensors: cheap ones computed on the device for every check, and a full digest for tests.

``parameter_fingerprints`` reads each parameter and buffer once, on its own
device, as integers (the bits of every element, whatever the dtype) and
reduces it to two numbers: the wrapping sum of its row sums and the sum of
the row sums weighted by row index. Any change of one element changes the
first; moving rows changes the second. One transfer to the CPU per check.
(Gemma 3 270M on 2 CPU cores: about 40 ms for all 268M values.)

``parameter_digest`` is a SHA-256 of every byte: slow, exact, for tests.
"""

from __future__ import annotations

import hashlib

import torch

_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's elements reinterpreted as integers of the same width, as a (rows, -1) matrix."""
    flat = tensor.detach()
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    flat = flat.contiguous().view(_INT_VIEW[flat.element_size()])
    rows = flat.shape[0] if flat.dim() > 1 else 1
    return flat.reshape(rows, -1)


def tensor_fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """Two integers (on the tensor's device) that change when any bit of the tensor changes."""
    bits = _bits(tensor)
    wide = torch.int64 if bits.dtype == torch.int64 else torch.int32
    row_sums = bits.sum(1, dtype=wide)
    weights = torch.arange(1, row_sums.numel() + 1, dtype=wide, device=row_sums.device)
    return torch.stack([row_sums.sum(dtype=torch.int64), (row_sums * weights).sum(dtype=torch.int64)])


def named_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name (tied weights once)."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


@torch.no_grad()
def parameter_fingerprints(model: torch.nn.Module, names: list[str] | None = None) -> dict[str, tuple[int, int]]:
    """``{name: fingerprint}`` of every parameter and buffer (or of ``names``), with one host transfer per device."""
    tensors = named_tensors(model)
    chosen = list(tensors) if names is None else names
    by_device: dict[torch.device, list[str]] = {}
    for name in chosen:
        by_device.setdefault(tensors[name].device, []).append(name)
    result: dict[str, tuple[int, int]] = {}
    for device_names in by_device.values():
        values = torch.stack([tensor_fingerprint(tensors[n]) for n in device_names]).cpu().tolist()
        result.update({n: (a, b) for n, (a, b) in zip(device_names, values)})
    return result


def parameter_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter and buffer, bit for bit (any dtype, any device): equal digests prove an exact undo."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
