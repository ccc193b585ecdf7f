"""MEND's editor network (Mitchell et al., 2022): gradient factors in, a weight update out.

For a linear layer the gradient of a loss is ``sum_t delta_t u_t^T`` (``u_t``:
the layer's input at token ``t``, ``delta_t``: the loss's gradient at its
output). MEND transforms each pair ``(u_t, delta_t)`` with a small network and
builds the update from the transformed pairs, a rank-one term per token:
``dW = -alpha_l * sum_t delta~_t u~_t^T`` with a learned step ``alpha_l`` per layer.

As in the original: one network per weight shape, shared by the layers of
that shape, each layer with its own scale and shift (``n_modes``); inputs
normalised by running means and deviations gathered while training; low-rank
residual layers initialised to the identity, so an untrained network makes
one plain gradient step. The original applies its ReLU in every layer, the
last included (``nn.LRLinear``); ours only in the hidden ones unless
``relu_last`` is set, which networks mapped from the original's set
(editors/mend/original.py).
"""

from __future__ import annotations

import torch
from torch import nn


class LowRankResidual(nn.Module):
    """``x + act((x A^T) B^T * scale[mode] + shift[mode] + b)``; ``B = 0`` at start, so the identity."""

    def __init__(self, dim: int, rank: int, n_modes: int, relu: bool) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.randn(rank, dim) / dim**0.5)
        self.up = nn.Parameter(torch.zeros(dim, rank))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.mode_scale = nn.Parameter(torch.ones(n_modes, dim))
        self.mode_shift = nn.Parameter(torch.zeros(n_modes, dim))
        self.relu = relu

    def forward(self, x: torch.Tensor, mode: int) -> torch.Tensor:
        pre = (x @ self.down.T) @ self.up.T + self.bias
        pre = pre * self.mode_scale[mode] + self.mode_shift[mode]
        return x + (torch.relu(pre) if self.relu else pre)


class GradientTransform(nn.Module):
    """Normalise ``(u, delta)``, transform them jointly, split them again."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, n_modes: int, n_hidden: int = 1, relu_last: bool = False) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        dim = in_dim + out_dim
        self.layers = nn.ModuleList([LowRankResidual(dim, min(rank, dim), n_modes, relu=i < n_hidden or relu_last)
                                     for i in range(n_hidden + 1)])
        for name, size in (("u", in_dim), ("d", out_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(size))
            self.register_buffer(f"{name}_m2", torch.zeros(size))  # sum of squared deviations (Welford)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def observe(self, u: torch.Tensor, d: torch.Tensor) -> None:
        """Welford's update of the running mean and variance, one row at a time as in the reference."""
        for u_row, d_row in zip(u.float(), d.float()):
            self.count += 1
            k = self.count.float()
            for name, row in (("u", u_row), ("d", d_row)):
                mean, m2 = getattr(self, f"{name}_mean"), getattr(self, f"{name}_m2")
                new_mean = mean + (row - mean) / k
                m2 += (row - mean) * (row - new_mean)
                mean.copy_(new_mean)

    def forward(self, u: torch.Tensor, d: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        u, d = u.float(), d.float()
        if self.count >= 2:
            u_std = (self.u_m2 / (self.count.float() - 1)).sqrt()
            d_std = (self.d_m2 / (self.count.float() - 1)).sqrt()
            u = (u - self.u_mean) / (u_std + 1e-7)
            d = (d - self.d_mean) / (d_std + 1e-7)
        x = torch.cat([u, d], dim=-1)
        for layer in self.layers:
            x = layer(x, mode)
        return x[:, : self.in_dim], x[:, self.in_dim :]


class MENDNetwork(nn.Module):
    """The transforms for a list of edited weights (``(out, in)`` shapes) and their learned steps."""

    def __init__(self, shapes: dict[str, tuple[int, int]], rank: int, edit_lr: float, n_hidden: int = 1,
                 relu_last: bool = False) -> None:
        super().__init__()
        self.relu_last = relu_last
        self.original = False  # mapped from a network the original MEND code trained (editors/mend/original.py)
        self.param_names = list(shapes)
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        by_shape: dict[tuple[int, int], list[str]] = {}
        for name, shape in self.shapes.items():
            by_shape.setdefault(shape, []).append(name)
        self.mode_of = {name: names.index(name) for names in by_shape.values() for name in names}
        self.transforms = nn.ModuleDict({
            self.shape_key(shape): GradientTransform(shape[1], shape[0], rank, len(names), n_hidden, relu_last)
            for shape, names in by_shape.items()
        })
        self.edit_lrs = nn.Parameter(torch.full((len(self.param_names),), float(edit_lr)))

    @staticmethod
    def shape_key(shape: tuple[int, int]) -> str:
        return f"{shape[0]}x{shape[1]}"

    def transform_of(self, name: str) -> GradientTransform:
        return self.transforms[self.shape_key(self.shapes[name])]

    def forward(self, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """``{name: (u rows, delta rows)}`` -> ``{name: (out, in) update}``; observes the inputs while training."""
        updates = {}
        for i, name in enumerate(self.param_names):
            u, d = factors[name]
            keep = (u != 0).any(-1) & (d != 0).any(-1)  # tokens with no gradient carry nothing
            u, d = u[keep], d[keep]
            transform = self.transform_of(name)
            if self.training:
                transform.observe(u, d)
            u_t, d_t = transform(u, d, self.mode_of[name])
            updates[name] = -self.edit_lrs[i] * (d_t.T @ u_t)
        return updates
