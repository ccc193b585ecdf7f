"""Original MEND networks (eric-mitchell/mend's checkpoints) mapped onto ours: a synthetic file in the original's
key layout, at tiny sizes, gives the update the original's formulas give."""

from __future__ import annotations

import pytest
import torch

from editors import make_editor
from editors.mend.original import OriginalCheckpointError
from pitfalls_editkit.contract import EditorSettings
from pitfalls_editkit.fingerprints import parameter_digest
from pitfalls_editkit.undo import editing

RANK = 8
EDITED = ["transformer.h.2.mlp.c_fc.weight", "transformer.h.2.mlp.c_proj.weight",
          "transformer.h.3.mlp.c_fc.weight", "transformer.h.3.mlp.c_proj.weight"]  # tiny-gpt2's MEND weights, model order


class Payload:
    """An object in a checkpoint: anything but tensors and the allowed config classes is refused, never unpickled."""


def original_state(model: torch.nn.Module, seed: int = 0) -> dict:
    """A state dict shaped as the original MEND wrapper's (combine, shared, IDMLP, n_hidden 1), random values."""
    generator = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=generator) * 0.1
    params = dict(model.named_parameters())
    shapes: dict[tuple[int, int], int] = {}
    for name in EDITED:
        shape = tuple(params[name].shape)  # GPT-2's Conv1D stores (in, out): the original's shape key as is
        shapes[shape] = shapes.get(shape, 0) + 1
    state: dict = {"edit_lrs": torch.rand(len(EDITED), generator=generator) * 1e-3}
    for (x_dim, delta_dim), n_modes in shapes.items():
        prefix = f"mend.{(x_dim, delta_dim)}"
        dim = x_dim + delta_dim
        for name, size in (("u", x_dim), ("v", delta_dim)):
            state[f"{prefix}.{name}_mean"] = rand(size)
            state[f"{prefix}.{name}_s"] = torch.rand(size, generator=generator) * 50 + 1
            state[f"{prefix}.{name}_std"] = torch.ones(size)
        state[f"{prefix}.k"] = torch.tensor([100.0])
        for i in range(2):
            layer = f"{prefix}.mlp.layers.{i}"
            state[f"{layer}.u"], state[f"{layer}.v"], state[f"{layer}.bias"] = rand(dim, RANK), rand(RANK, dim), rand(dim)
            state[f"{layer}.mode_scale.weight"] = 1 + rand(n_modes, dim)
            state[f"{layer}.mode_shift.weight"] = rand(n_modes, dim)
    return state


def original_update(state: dict, u: torch.Tensor, d: torch.Tensor, shape: tuple[int, int], mode: int, lr: torch.Tensor) -> torch.Tensor:
    """The original's formulas, written out: normalise, two LRLinear layers (ReLU in both), ``lr * delta~^T u~``."""
    prefix = f"mend.{shape}"
    k = state[f"{prefix}.k"]
    u_n = (u - state[f"{prefix}.u_mean"]) / ((state[f"{prefix}.u_s"] / (k - 1)) ** 0.5 + 1e-7)
    d_n = (d - state[f"{prefix}.v_mean"]) / ((state[f"{prefix}.v_s"] / (k - 1)) ** 0.5 + 1e-7)
    x = torch.cat([u_n, d_n], -1)
    for i in range(2):
        layer = f"{prefix}.mlp.layers.{i}"
        pre = (state[f"{layer}.u"] @ (state[f"{layer}.v"] @ x.T)).T + state[f"{layer}.bias"]
        pre = pre * state[f"{layer}.mode_scale.weight"][mode] + state[f"{layer}.mode_shift.weight"][mode]
        x = pre.clamp(min=0) + x
    u_t, d_t = x[:, : u.shape[1]], x[:, u.shape[1]:]
    return lr * torch.einsum("bi,bj->ji", u_t, d_t)  # Linear layout (out, in); GPT-2's "ij" is its transpose


def test_an_original_network_maps_onto_ours_and_gives_the_same_update(tiny_loader, cache_dir, tmp_path):
    from transformers import GPT2Config

    loaded = tiny_loader("tiny-gpt2")
    state = original_state(loaded.model)
    path = tmp_path / "mend-10tok-tiny.pt"
    # As the original trainer saves it: the wrapper's state dict (with the pickled model config) under "model".
    torch.save({"model": {**state, "model_config": GPT2Config(n_layer=2)}, "val_stats": {"edit/acc_val": 0.9}}, path)
    settings = EditorSettings(cache_dir=cache_dir, hparams_values=(("checkpoint", str(path)), ("rank", RANK)))
    editor = make_editor("mend", loaded, settings)
    assert editor.describe()["original_network"] is True
    network = editor.network
    generator = torch.Generator().manual_seed(1)
    params = dict(loaded.model.named_parameters())
    factors = {}
    for name in network.param_names:
        x_dim, delta_dim = params[f"{name}.weight"].shape
        factors[name] = (torch.randn(5, x_dim, generator=generator), torch.randn(5, delta_dim, generator=generator))
    with torch.no_grad():
        ours = network(factors)
    shapes = {}
    for name in EDITED:
        shapes.setdefault(tuple(params[name].shape), []).append(name)
    for i, weight in enumerate(EDITED):
        name = weight.removesuffix(".weight")
        shape = tuple(params[weight].shape)
        expected = original_update(state, *factors[name], shape, shapes[shape].index(weight), state["edit_lrs"][i])
        torch.testing.assert_close(ours[name], expected, rtol=1e-4, atol=1e-7)
    # It edits through the harness like any network, and the undo is exact.
    digest = parameter_digest(loaded.model)
    from tests.conftest import PUBLISHED
    from tests.test_new_editors import first_easy_edits

    with editing(loaded.model, editor):
        editor.apply(first_easy_edits(PUBLISHED, 1))
        assert parameter_digest(loaded.model) != digest
    assert parameter_digest(loaded.model) == digest


def test_original_files_that_do_not_fit_are_one_line(tiny_loader, cache_dir, tmp_path):
    loaded = tiny_loader("tiny-gpt2")
    state = original_state(loaded.model)
    wrong_rank = tmp_path / "rank.pt"
    torch.save({"model": state}, wrong_rank)
    with pytest.raises(OriginalCheckpointError, match="rank.pt: .*mlp.layers.0.v has shape"):
        make_editor("mend", loaded, EditorSettings(cache_dir=cache_dir, hparams_values=(("checkpoint", str(wrong_rank)),)))
    missing = tmp_path / "layers.pt"
    torch.save({"model": {k: v for k, v in state.items() if "(64, 256)" not in k}}, missing)
    with pytest.raises(OriginalCheckpointError, match="layers.pt: has no 'mend.\\(64, 256\\)"):
        make_editor("mend", loaded, EditorSettings(cache_dir=cache_dir, hparams_values=(("checkpoint", str(missing)), ("rank", RANK))))

    torch.save({"model": state, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(OriginalCheckpointError, match="evil.pt: cannot be loaded with weights_only=True"):
        make_editor("mend", loaded, EditorSettings(cache_dir=cache_dir, hparams_values=(("checkpoint", str(tmp_path / "evil.pt")),
                                                                                          ("rank", RANK))))
    from pitfalls_editkit.hparams import HyperParamsError

    with pytest.raises(HyperParamsError, match="checkpoint /nonexistent/net.pt: no such file"):
        make_editor("mend", loaded, EditorSettings(cache_dir=cache_dir, hparams_values=(("checkpoint", "/nonexistent/net.pt"),)))
