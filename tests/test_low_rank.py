"""Low-rank updates seen per batch row through hooks equal the same updates written into the weights."""

from __future__ import annotations

import pytest
import torch

from pitfalls_editkit.fingerprints import parameter_digest
from pitfalls_editkit.low_rank import LowRankUpdate, RowUpdates, combined, weight_update
from pitfalls_editkit.nethook import get_module

MODULES = {"tiny-llama": "model.layers.0.mlp.down_proj", "tiny-gpt2": "transformer.h.0.mlp.c_proj"}


def _random_update(module: torch.nn.Module, name: str, rank: int, seed: int) -> LowRankUpdate:
    generator = torch.Generator().manual_seed(seed)
    out_features, in_features = weight_update(module, module.weight).shape
    return LowRankUpdate({name: (0.05 * torch.randn(out_features, rank, generator=generator),
                                 torch.randn(in_features, rank, generator=generator))})


@pytest.mark.parametrize("model_name", sorted(MODULES))
def test_each_row_sees_its_own_update_as_if_written(tiny_loader, model_name: str):
    loaded = tiny_loader(model_name)
    model, name = loaded.model, MODULES[model_name]
    module = get_module(model, name)
    updates = [_random_update(module, name, 1, 1), None, _random_update(module, name, 2, 2) + _random_update(module, name, 1, 3)]
    ids = torch.randint(0, loaded.tokenizer.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    batch, groups = ids.repeat(3, 1), [0, 0, 1, 1, 2, 2]
    original = parameter_digest(model)
    with torch.no_grad(), RowUpdates(model, updates) as hooks:
        hooks.groups = groups
        hooked = model(input_ids=batch).logits
    assert parameter_digest(model) == original and not module._forward_hooks
    for group, update in enumerate(updates):
        with torch.no_grad():
            saved = module.weight.clone()
            if update is not None:
                module.weight += weight_update(module, update.dense(name))
            written = model(input_ids=ids).logits
            module.weight.copy_(saved)
        assert torch.allclose(hooked[2 * group : 2 * group + 2], written, rtol=1e-4, atol=1e-5), group
    assert not torch.allclose(hooked[:2], hooked[2:4], atol=1e-5)  # the updates did change something


def test_gradients_flow_through_the_hooks_and_hooks_go_on_an_exception(tiny_loader):
    loaded = tiny_loader("tiny-llama")
    model, name = loaded.model, MODULES["tiny-llama"]
    module = get_module(model, name)
    update = _random_update(module, name, 1, 0)
    left = update.factors[name][0].clone().requires_grad_(True)
    with RowUpdates(model, [LowRankUpdate({name: (left, update.factors[name][1])})]):  # groups None: every row
        model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    assert left.grad is not None and float(left.grad.norm()) > 0
    with pytest.raises(RuntimeError, match="inside"), RowUpdates(model, [update]):
        raise RuntimeError("inside")
    assert not module._forward_hooks


def test_updates_add_by_concatenating_their_factors():
    a = LowRankUpdate({"m": (torch.ones(3, 1), torch.ones(2, 1))})
    b = LowRankUpdate({"m": (2 * torch.ones(3, 1), torch.ones(2, 1)), "n": (torch.ones(1, 1), torch.ones(1, 1))})
    total = combined(None, a, b)
    assert total.factors["m"][0].shape == (3, 2) and set(total.factors) == {"m", "n"}
    assert torch.equal(total.dense("m"), a.dense("m") + b.dense("m"))
    assert combined(None, None) is None and combined(a) is a
