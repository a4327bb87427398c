"""CausalLM: causality, cache, training, generation, save/load and bad input, on every backend."""

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.models import CausalLM

TINY = dict(vocabulary_size=37, num_layers=2, num_heads=4, hidden_dim=16, intermediate_dim=32, max_sequence_length=24)
STYLES = {
    "gpt2": {},
    "llama": dict(position_embedding="rotary", normalization="rmsnorm", activation="swiglu", use_bias=False,
                  num_key_value_heads=2, tie_word_embeddings=False),
}


def build(style="gpt2", **overrides):
    return CausalLM(**{**TINY, **STYLES[style], **overrides})


def np_(x):
    return ops.convert_to_numpy(x)


def ids(batch=2, length=12, vocabulary=37, seed=0):
    return np.random.default_rng(seed).integers(0, vocabulary, (batch, length)).astype("int32")


@pytest.mark.parametrize("style", STYLES)
def test_output_shape_and_dtype(style):
    model = build(style)
    logits = model(ids())
    assert tuple(logits.shape) == (2, 12, 37)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


@pytest.mark.parametrize("style", STYLES)
def test_changing_a_future_token_never_changes_earlier_logits(style):
    model = build(style)
    x = ids()
    x2 = x.copy()
    x2[:, 7] = (x2[:, 7] + 5) % 37
    a, b = np_(model(x)), np_(model(x2))
    np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert np.abs(a[:, 7:] - b[:, 7:]).max() > 1e-5


@pytest.mark.parametrize("style", STYLES)
def test_cached_decoding_matches_full_forward(style):
    model = build(style)
    x = ids(length=10)
    full = np_(model(x))
    cache = model.backbone.initial_cache(2, 10)
    logits, cache = model.call_with_cache(x[:, :4], cache, 0)
    np.testing.assert_allclose(np_(logits), full[:, 3], atol=1e-5)
    for t in range(4, 10):
        # The position as a tensor, as compiled decoding passes it (one program for every position on JAX).
        logits, cache = model.call_with_cache(x[:, t:t + 1], cache, keras.ops.convert_to_tensor(t, "int32"))
        np.testing.assert_allclose(np_(logits), full[:, t], atol=1e-5)


def test_padding_mask_input_matches_unpadded_prefix():
    model = build("llama")
    x = ids(batch=1, length=8)
    mask = np.array([[1] * 5 + [0] * 3], bool)
    padded = np_(model({"token_ids": x, "padding_mask": mask}))
    np.testing.assert_allclose(padded[:, :5], np_(model(x[:, :5])), atol=1e-5)


@pytest.mark.parametrize("style", STYLES)
def test_a_few_training_steps_reduce_the_loss(style):
    model = build(style)
    x = np.tile(np.arange(12, dtype="int32") % 5, (8, 1))  # a pattern that is easy to learn
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x[:, :-1], x[:, 1:], epochs=15, batch_size=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]


def test_mixed_precision_trains_with_float32_logits():
    model = build("llama", dtype="mixed_bfloat16")
    assert model.backbone.blocks[0].attention.query.compute_dtype == "bfloat16"
    x = ids(batch=4, length=8)
    logits = model(x)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = model.train_on_batch(x[:, :-1], x[:, 1:])
    assert np.isfinite(loss)


def test_greedy_generation_is_deterministic_and_batches_different_lengths():
    model = build("llama")
    prompts = [[1, 2, 3, 4, 5], [6, 7]]
    batched = model.generate(prompts, max_new_tokens=6, greedy=True)
    assert batched == model.generate(prompts, max_new_tokens=6, greedy=True)
    for prompt, out in zip(prompts, batched):
        alone = model.generate(np.array(prompt), max_new_tokens=6, greedy=True)
        assert list(alone) == out
        assert out[: len(prompt)] == prompt and len(out) == len(prompt) + 6
    # The greedy continuation is the argmax of a full forward pass at each step.
    seq = np.array(batched[0])[None]
    logits = np_(model(seq[:, :-1]))
    assert list(logits[0, 4:].argmax(-1)) == batched[0][5:]


def test_sampling_seed_top_k_and_stop_tokens():
    model = build()
    a = model.generate([[1, 2]], max_new_tokens=8, seed=3, temperature=1.5)
    assert a == model.generate([[1, 2]], max_new_tokens=8, seed=3, temperature=1.5)
    out = model.generate([[1, 2]], max_new_tokens=8, seed=3, top_k=1)
    assert out == model.generate([[1, 2]], max_new_tokens=8, greedy=True)
    greedy = model.generate([[1, 2]], max_new_tokens=8, greedy=True)[0]
    stop = greedy[4]
    stopped = model.generate([[1, 2]], max_new_tokens=8, greedy=True, stop_token_ids=[stop])[0]
    assert stopped == greedy[: greedy.index(stop, 2)]


def test_generation_stops_at_max_sequence_length():
    model = build(max_sequence_length=10)
    out = model.generate([[1, 2, 3]], max_new_tokens=50, greedy=True)[0]
    assert len(out) == 10


def test_save_load_in_fresh_process_gives_identical_outputs(tmp_path, run_in_fresh_process):
    for style in STYLES:
        model = build(style)
        path = tmp_path / f"{style}.keras"
        model.save(path)
        x = ids()
        np.save(tmp_path / "x.npy", x)
        expected = np_(model(x))
        out = run_in_fresh_process(
            "import keras, numpy as np, kerasllm\n"
            f"m = keras.saving.load_model({str(path)!r})\n"
            f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, keras.ops.convert_to_numpy(m(x)))\n"
            "print(type(m).__name__)\n"
        )
        assert "CausalLM" in out
        np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_config_round_trip_and_presets():
    model = build("llama")
    clone = CausalLM.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    for name in CausalLM.presets:
        config = CausalLM.presets[name]
        assert config["num_heads"] % config.get("num_key_value_heads", config["num_heads"]) == 0
    tiny = CausalLM.from_preset("tiny", vocabulary_size=100)
    assert tiny.vocabulary_size == 100 and tiny.num_layers == 4


def test_small_preset_has_about_25m_parameters():
    config = dict(CausalLM.presets["small"])
    V, C, L, I, T = (config[k] for k in ("vocabulary_size", "hidden_dim", "num_layers", "intermediate_dim",
                                          "max_sequence_length"))
    per_layer = 4 * C * C + 4 * C + 2 * C * I + I + C + 4 * C
    total = V * C + T * C + L * per_layer + 2 * C
    assert 20e6 < total < 30e6


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[1, 2, 40]]), "vocabulary has only 37"),
        (np.array([[1, -1, 2]]), "negative token id"),
        (np.array([[1.0, 2.0]]), "integer token ids"),
        (np.zeros((1, 30), "int32"), "longer than the model's maximum"),
        (np.zeros((2, 3, 4), "int32"), "rank"),
    ],
)
def test_bad_token_ids_give_clear_errors_in_predict_and_generate(bad, message):
    model = build()
    with pytest.raises(ValueError, match=message):
        model.predict(bad, verbose=0)
    if bad.ndim == 2 and bad.shape[0] == 1:
        with pytest.raises(ValueError):
            model.generate(bad, max_new_tokens=2)


def test_float_ids_and_long_sequences_fail_inside_call_too():
    model = build()
    with pytest.raises(ValueError, match="integer token ids"):
        model(ops.ones((1, 4), "float32"))
    with pytest.raises(ValueError, match="max_sequence_length"):
        model(ops.zeros((1, 30), "int32"))


def test_fit_checks_arrays_before_compiling():
    model = build()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = ids()
    x[0, 0] = 99
    with pytest.raises(ValueError, match="token id 99"):
        model.fit(x, x, epochs=1, verbose=0)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ValueError, match="tiny"):
        CausalLM.from_preset("gpt5")


def test_tokenizer_vocabulary_mismatch():
    class FakeTokenizer:
        vocabulary_size = 2048
        eos_token_id = 1

        def encode(self, text):
            return [5]

    with pytest.raises(ValueError, match="vocabulary of 2048"):
        build().generate("ROMEO:", tokenizer=FakeTokenizer(), max_new_tokens=2)
    with pytest.raises(ValueError, match="need a tokenizer"):
        build().generate("ROMEO:")


def test_bad_architecture_arguments():
    with pytest.raises(ValueError, match="num_layers"):
        build(num_layers=0)
    with pytest.raises(ValueError, match="position_embedding"):
        build(position_embedding="alibi")
    with pytest.raises(ValueError, match="divisible"):
        build(hidden_dim=18)


def test_fit_rejects_a_dataset_built_for_a_larger_vocabulary_or_longer_sequences():
    tokens = np.arange(2000) % 50
    data = kerasllm.data.LanguageModelingDataset(tokens, sequence_length=8, batch_size=4, vocabulary_size=50)
    model = build()  # vocabulary 37
    model.compile(optimizer="adam", loss=kerasllm.losses.CausalLMLoss())
    with pytest.raises(ValueError, match="dataset has a vocabulary of 50"):
        model.fit(data, epochs=1, verbose=0)
    long = kerasllm.data.LanguageModelingDataset(tokens % 37, sequence_length=30, batch_size=4, vocabulary_size=37)
    with pytest.raises(ValueError, match="longer than the model's max_sequence_length"):
        model.fit(long, epochs=1, verbose=0)


def test_empty_inputs_are_rejected():
    model = build()
    with pytest.raises(ValueError, match="empty"):
        model.predict(np.zeros((0, 8), "int32"), verbose=0)


def test_a_model_saved_on_this_backend_loads_on_the_others(tmp_path):
    import importlib.util
    import os
    import subprocess
    import sys

    model = build("llama")
    model.save(tmp_path / "m.keras")
    x = ids()
    np.save(tmp_path / "x.npy", x)
    expected = np_(model(x))
    code = (
        "import keras, numpy as np, kerasllm\n"
        f"m = keras.saving.load_model({str(tmp_path / 'm.keras')!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, keras.ops.convert_to_numpy(m(np.load({str(tmp_path / 'x.npy')!r}))))\n"
    )
    others = [b for b in ("jax", "torch", "tensorflow") if b != keras.backend.backend() and importlib.util.find_spec(b)]
    for backend in others:
        env = dict(os.environ, KERAS_BACKEND=backend)
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)


def test_compiled_model_reloads_compiled_with_its_optimizer_state(tmp_path):
    import warnings

    model = build()
    model.compile(optimizer=kerasllm.optimizers.create_optimizer(1e-3, total_steps=10),
                  loss=kerasllm.losses.CausalLMLoss(), metrics=[kerasllm.metrics.Perplexity()])
    x = ids(batch=4, length=8)
    model.fit(x, x, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        restored = keras.saving.load_model(tmp_path / "m.keras")
    assert restored.compiled and isinstance(restored.loss, kerasllm.losses.CausalLMLoss)
    assert int(restored.optimizer.iterations.numpy()) == 1
    np.testing.assert_array_equal(np_(restored.optimizer.variables[-1]), np_(model.optimizer.variables[-1]))
