"""Prompt tuning: the soft prompt acts as a prefix, only it trains, generation uses it, round trips."""

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.models import CausalLM

TINY = dict(vocabulary_size=61, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)
LLAMA = dict(TINY, num_key_value_heads=1, position_embedding="rotary", normalization="rmsnorm", activation="swiglu",
             use_bias=False, tie_word_embeddings=False)


def np_(x):
    return ops.convert_to_numpy(x)


def tokens(seed=0, shape=(6, 10)):
    return np.random.default_rng(seed).integers(0, 61, shape).astype("int32")


def prompt_ids(model, seed):
    """The vocabulary ids `enable_prompt_tuning(initializer="vocabulary", seed=seed)` draws."""
    return np.random.default_rng(seed).integers(0, model.vocabulary_size, model.num_virtual_tokens)


@pytest.mark.parametrize("config", [TINY, LLAMA], ids=["gpt2", "llama"])
def test_soft_prompt_is_a_prefix_of_virtual_tokens(config):
    # Initialised from the embeddings of real tokens, the soft prompt must act exactly like those
    # tokens written in front of the input: positions, causal mask and output slicing all agree.
    model = CausalLM(**config)
    reference = CausalLM(**config)
    reference.set_weights(model.get_weights())
    x = tokens()
    model.enable_prompt_tuning(4, initializer="vocabulary", seed=7)
    ids = prompt_ids(model, 7)
    table = np_(model.backbone.token_embedding.embeddings)
    np.testing.assert_allclose(np_(model.backbone.soft_prompt.prompt), table[ids])
    prefixed = np.concatenate([np.tile(ids, (len(x), 1)), x], axis=1).astype("int32")
    expected = np_(reference(prefixed))[:, 4:]
    logits = np_(model(x))
    assert logits.shape == (6, 10, 61)
    np.testing.assert_allclose(logits, expected, atol=1e-5)

    # Padding: masked positions change nothing for the real tokens.
    mask = np.ones_like(x, bool)
    mask[:, 7:] = False
    other = x.copy()
    other[:, 7:] = 3
    a = np_(model({"token_ids": x, "padding_mask": mask}))[:, :7]
    b = np_(model({"token_ids": other, "padding_mask": mask}))[:, :7]
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, expected[:, :7], atol=1e-5)


def test_only_the_prompt_trains():
    model = CausalLM(**TINY)
    model.enable_prompt_tuning(3, initializer="random", seed=0)
    assert [v.path.split("/")[-1] for v in model.trainable_weights] == ["prompt"]
    before = {v.path: np.array(np_(v)) for v in model.weights}
    x = tokens()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=kerasllm.losses.CausalLMLoss())
    history = model.fit(x, x, batch_size=3, epochs=3, verbose=0)
    changed = [v.path for v in model.weights if not np.array_equal(before[v.path], np_(v))]
    assert changed == [model.backbone.soft_prompt.prompt.path]
    assert history.history["loss"][-1] < history.history["loss"][0]


def greedy_without_cache(model, prompt, steps):
    # One fixed-length buffer (later positions cannot affect earlier ones under the causal mask), so
    # every call has the same shape and nothing recompiles.
    buffer = np.zeros((1, len(prompt) + steps), "int32")
    buffer[0, : len(prompt)] = prompt
    for position in range(len(prompt), len(prompt) + steps):
        buffer[0, position] = np_(model(buffer))[0, position - 1].argmax()
    return buffer[0].tolist()


def test_generation_uses_the_prompt_and_matches_full_forward_reference():
    model = CausalLM(**TINY)
    # Kernels 8x larger than at initialisation, so attention (and with it the prompt) steers the
    # output; at initialisation an untrained model greedily repeats its last token, prompt or not.
    model.set_weights([w * 8 if w.ndim == 2 and w.shape[0] != 61 else w for w in model.get_weights()])
    base = CausalLM(**TINY)
    base.set_weights(model.get_weights())
    prompt = [5, 17, 33]
    model.enable_prompt_tuning(5, initializer="random")
    model.backbone.soft_prompt.prompt.assign(np.random.default_rng(3).normal(0, 1.0, (5, 16)).astype("float32"))
    assert model.backbone.initial_cache(2, 8).shape[3] == 5 + 8  # the cache holds the virtual tokens too
    with_prompt = model.generate(np.array(prompt), max_new_tokens=8, greedy=True).tolist()
    without = base.generate(np.array(prompt), max_new_tokens=8, greedy=True).tolist()
    assert with_prompt != without
    assert with_prompt == greedy_without_cache(model, prompt, 8)
    # Room for real tokens shrinks by the prompt's length: 16 - 5 = 11 tokens in all.
    assert len(model.generate(np.array(prompt), max_new_tokens=50, greedy=True)) == 11


def test_prompt_round_trips(tmp_path):
    base_weights = CausalLM(**TINY).get_weights()
    model = CausalLM(**TINY)
    model.set_weights(base_weights)
    model.enable_prompt_tuning(4, seed=1)
    model.backbone.soft_prompt.prompt.assign(np.random.default_rng(0).normal(size=(4, 16)).astype("float32"))
    x = tokens()
    expected = np_(model(x))

    path = str(tmp_path / "prompt.npz")
    model.save_prompt(path)
    with np.load(path) as archive:
        assert archive["prompt"].shape == (4, 16)
    fresh = CausalLM(**TINY)
    fresh.set_weights(base_weights)
    fresh.load_prompt(path)
    np.testing.assert_allclose(np_(fresh(x)), expected, atol=1e-6)

    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert reloaded.num_virtual_tokens == 4
    assert [v.path.split("/")[-1] for v in reloaded.trainable_weights] == ["prompt"]
    np.testing.assert_allclose(np_(reloaded(x)), expected, atol=1e-6)

    other = CausalLM(**TINY)
    other.enable_prompt_tuning(2)
    with pytest.raises(ValueError, match="4 virtual tokens"):
        other.load_prompt(path)


def test_bad_input_is_rejected_with_the_fix():
    model = CausalLM(**TINY)
    with pytest.raises(ValueError, match="positive integer"):
        model.enable_prompt_tuning(0)
    with pytest.raises(ValueError, match="larger `max_sequence_length`"):
        model.enable_prompt_tuning(16)
    with pytest.raises(ValueError, match="Unknown prompt initializer"):
        model.enable_prompt_tuning(4, initializer="zeros")
    model.enable_prompt_tuning(6)
    with pytest.raises(ValueError, match="exceed the model's max_sequence_length 16 by 2. Use sequences of at most 10"):
        model(np.zeros((1, 12), "int32"))
    with pytest.raises(ValueError, match="by 1. Use sequences of at most 10"):
        model.generate(np.zeros(11, "int32"), max_new_tokens=1)
    with pytest.raises(ValueError, match="already enabled"):
        model.enable_prompt_tuning(2)
    lora_model = CausalLM(**TINY)
    lora_model.enable_lora(2)
    with pytest.raises(ValueError, match="LoRA is enabled"):
        lora_model.enable_prompt_tuning(2)
