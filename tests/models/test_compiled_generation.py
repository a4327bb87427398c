"""Compiled generation (`sampler="device"`, the default) against the host loop it replaced, on every backend."""

import numpy as np
import pytest

import kerasllm
from kerasllm.models import CausalLM

TINY = dict(vocabulary_size=61, num_layers=2, num_heads=4, hidden_dim=16, intermediate_dim=32, max_sequence_length=96)
LLAMA = dict(position_embedding="rotary", normalization="rmsnorm", activation="swiglu", use_bias=False,
             num_key_value_heads=2, tie_word_embeddings=False)


def build(**overrides):
    model = CausalLM(**{**TINY, **overrides})
    rng = np.random.RandomState(0)
    for variable in model.weights:  # larger weights than the initializer's: confident, varied predictions
        variable.assign(rng.normal(scale=0.3, size=variable.shape).astype(variable.dtype))
    return model


def prompts(lengths=(3, 9, 5), seed=1):
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 61, size=n).tolist() for n in lengths]


def both(model, rows, **kwargs):
    return model.generate(rows, sampler="host", **kwargs), model.generate(rows, **kwargs)


@pytest.mark.parametrize("style", [{}, LLAMA], ids=["gpt2", "llama"])
def test_greedy_outputs_equal_the_host_loop_with_mixed_prompt_lengths_and_stop_tokens(style):
    model = build(**style)
    host, device = both(model, prompts(), max_new_tokens=20, greedy=True)
    assert host == device and all(len(row) == n + 20 for row, n in zip(device, (3, 9, 5)))
    stops = [device[0][3 + 6], device[2][5 + 10]]  # tokens these rows generate: they stop there
    host, device = both(model, prompts(), max_new_tokens=20, greedy=True, stop_token_ids=stops)
    assert host == device
    assert len(device[0]) <= 3 + 6 and len(device[2]) <= 5 + 10


@pytest.mark.parametrize("settings", [
    dict(temperature=0.9), dict(top_k=5), dict(top_p=0.8), dict(temperature=1.3, top_k=20, top_p=0.9),
], ids=["temperature", "top_k", "top_p", "all"])
def test_sampling_is_reproducible_and_matches_the_host_sampler(settings):
    model = build()
    host, device = both(model, prompts(), max_new_tokens=24, seed=7, **settings)
    assert device == model.generate(prompts(), max_new_tokens=24, seed=7, **settings)
    # The same uniform numbers in the same order: the same tokens, unless float32 and float64 round two
    # cumulative probabilities to opposite sides of a draw (not the case for this model and seed).
    assert device == host
    assert device != model.generate(prompts(), max_new_tokens=24, seed=8, **settings)


def test_top_k_one_and_tiny_top_p_are_greedy():
    model = build()
    greedy = model.generate(prompts(), max_new_tokens=12, greedy=True)
    assert model.generate(prompts(), max_new_tokens=12, top_k=1, seed=0) == greedy
    assert model.generate(prompts(), max_new_tokens=12, top_p=1e-6, seed=0) == greedy


def test_one_program_per_length_bucket_and_no_retrace_per_token():
    model = build()
    for lengths in [(3,), (9,), (17,)]:  # prompt + 20 new tokens all fit the first bucket of 64
        model.generate(prompts(lengths), max_new_tokens=20, greedy=True)
    functions = model._kerasllm_decode_functions
    assert list(functions) == [(1, 64, True, None, False, 1)]
    _, fn = functions[(1, 64, True, None, False, 1)]
    if hasattr(fn.step, "graphs"):  # torch: the Python loop replays one traced step graph
        assert len(fn.step.graphs) == 1
    else:  # jax, tensorflow: the whole loop is one compiled program, traced once
        assert fn.traces == 1


def test_soft_prompts_lora_and_int8_models_generate_as_the_host_loop():
    model = build(**LLAMA)
    model.enable_prompt_tuning(num_virtual_tokens=4, seed=0)
    host, device = both(model, prompts(), max_new_tokens=10, greedy=True)
    assert host == device
    model = build(**LLAMA)
    model.enable_lora(rank=2)
    host, device = both(model, prompts(), max_new_tokens=10, greedy=True)
    assert host == device
    model = build(**LLAMA)
    model.quantize("int8")
    host, device = both(model, prompts(), max_new_tokens=10, greedy=True)
    assert host == device


def test_new_weights_are_used_without_recompiling():
    model = build()
    before = model.generate(prompts(), max_new_tokens=10, greedy=True)
    rng = np.random.RandomState(5)
    for variable in model.weights:
        variable.assign(rng.normal(scale=0.3, size=variable.shape).astype(variable.dtype))
    after = model.generate(prompts(), max_new_tokens=10, greedy=True)
    assert after == model.generate(prompts(), max_new_tokens=10, greedy=True, sampler="host")
    assert after != before and len(model._kerasllm_decode_functions) == 1


def test_text_prompts_and_sequence_limits():
    text = "to be or not to be that is the question " * 20
    tokenizer = kerasllm.tokenizers.CharacterTokenizer.train(text)
    model = build(vocabulary_size=tokenizer.vocabulary_size, max_sequence_length=40)
    out = model.generate(["to be", "or not"], tokenizer=tokenizer, max_new_tokens=100, greedy=True)
    assert out == model.generate(["to be", "or not"], tokenizer=tokenizer, max_new_tokens=100, greedy=True,
                                 sampler="host")
    assert all(len(tokenizer.encode(row)) <= 40 for row in out)
    with pytest.raises(ValueError, match="sampler"):
        model.generate("to be", tokenizer=tokenizer, sampler="gpu")
