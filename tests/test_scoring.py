"""Batched scoring equals the one-pair-at-a-time computation, whatever the padding side."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pitfalls_editkit.scoring import Scorer, encode_completion

PROMPTS = ["The capital of France is", "Zürich is a city in", "{} plays the".format("Lionel Messi"), "The mother of  Maria is"]
OBJECTS = ["Paris", "Switzerland", "football", "Maria Theresa of Austria", "&"]


def unbatched_probability(model, tokenizer, prompt: str, obj: str) -> float:
    """METRICS.md's formula, written out for one pair with no padding at all."""
    enc = encode_completion(tokenizer, prompt, obj)
    ids = torch.tensor([enc.ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    token_lp = [logp[enc.prompt_len + j - 1, enc.ids[enc.prompt_len + j]] for j in range(len(enc.ids) - enc.prompt_len)]
    return float(torch.exp(torch.stack(token_lp).mean()))


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-gemma3", "tiny-gptj"])
def test_batched_equals_unbatched_for_both_padding_sides(tiny_loader, name):
    loaded = tiny_loader(name)
    expected = np.array([[unbatched_probability(loaded.model, loaded.tokenizer, p, o) for o in OBJECTS] for p in PROMPTS])
    for side in ("right", "left"):
        for rows in (64, 3):  # one batch, and several uneven ones
            got = Scorer(loaded.model, loaded.tokenizer, padding_side=side, max_rows=rows).object_probabilities(PROMPTS, OBJECTS)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=0)


def test_fact_score_is_the_mean_over_prompts(tiny_loader):
    loaded = tiny_loader("tiny-gpt2")
    scorer = Scorer(loaded.model, loaded.tokenizer)
    table = scorer.object_probabilities(PROMPTS, OBJECTS)
    assert scorer.fact_scores(PROMPTS, OBJECTS) == pytest.approx(table.mean(axis=0).tolist())


def test_many_facts_in_one_call_equal_each_fact_alone(tiny_loader):
    loaded = tiny_loader("tiny-llama")
    scorer = Scorer(loaded.model, loaded.tokenizer, max_rows=7)  # batches that cut across facts
    facts = [(PROMPTS[:2], OBJECTS[:3]), (PROMPTS[2:], OBJECTS[3:]), (PROMPTS[1:2], OBJECTS)]
    together = scorer.many_fact_scores(facts)
    assert [len(scores) for scores in together] == [3, 2, 5]
    for (prompts, objects), scores in zip(facts, together):
        assert scores == pytest.approx(scorer.fact_scores(prompts, objects), rel=1e-5)


def test_completion_tokens_follow_the_prompt(tiny_loader):
    tok = tiny_loader("tiny-gpt2").tokenizer
    enc = encode_completion(tok, "The capital of France is", "Paris")
    assert list(enc.ids[: enc.prompt_len]) == tok("The capital of France is")["input_ids"]
    assert list(enc.ids[enc.prompt_len :]) == tok(" Paris", add_special_tokens=False)["input_ids"]


def test_nan_weights_give_one_clear_error(tiny_loader):
    loaded = tiny_loader("tiny-gpt2")
    with torch.no_grad():
        loaded.model.get_parameter("transformer.h.0.mlp.c_proj.weight").fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN/inf log-probabilities for 'Paris' after 'The capital of France is'"):
        Scorer(loaded.model, loaded.tokenizer).object_probabilities(["The capital of France is"], ["Paris"])


def test_the_body_is_found_where_base_model_is_the_whole_model():
    """transformers 4.57's Gemma 3 causal LM names a ``base_model_prefix`` it lacks; the body must still be found."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from pitfalls_editkit.scoring import transformer_body, vocabulary_logits

    class PrefixLacking(Gemma3ForCausalLM):
        base_model_prefix = "language_model"

    config = Gemma3TextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              num_key_value_heads=1, head_dim=8)
    torch.manual_seed(0)
    model = PrefixLacking(config).eval()
    assert model.base_model is model and transformer_body(model) is model.model
    ids = torch.tensor([[1, 5, 9, 3]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits[0, 2]
        only = vocabulary_logits(model, ids, mask, torch.tensor([0]), torch.tensor([2]))[0]
    assert torch.allclose(full.float(), only, atol=1e-5)
