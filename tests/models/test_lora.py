"""LoRA on kerasllm models: what trains, merging, adapter-only files, .keras reload, QLoRA, bad input."""

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


def tokens(seed=0, shape=(8, 12)):
    return np.random.default_rng(seed).integers(0, 61, shape).astype("int32")


def snapshot(model):
    return {v.path: np.array(np_(v)) for v in model.weights}


def fit_a_little(model, x, epochs=2):
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=kerasllm.losses.CausalLMLoss())
    model.fit(x, x, batch_size=4, epochs=epochs, verbose=0)


def test_only_adapters_train_and_parameter_count_matches_formula():
    model = CausalLM(**LLAMA)
    rank = 3
    model.enable_lora(rank, alpha=6, target_layers=("query", "value", "gate"))
    hidden, heads, kv_heads, head_dim, inter = 16, 2, 1, 8, 32
    per_block = rank * ((hidden + heads * head_dim) + (hidden + kv_heads * head_dim) + (hidden + inter))
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == 2 * per_block
    assert all("lora_kernel" in v.path for v in model.trainable_weights)
    x = tokens()
    before = snapshot(model)
    fit_a_little(model, x)
    after = snapshot(model)
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    adapters = {path for path in before if "lora_kernel" in path}
    # Every B starts at zero, so A gets no gradient on the first step but moves afterwards.
    assert changed == adapters
    assert len(adapters) == 2 * 3 * 2


def test_fresh_adapters_do_not_change_outputs_and_merge_matches_unmerged():
    model = CausalLM(**TINY)
    x = tokens()
    base = np_(model(x))
    model.enable_lora(2, target_layers=("query", "value", "output", "intermediate"))
    np.testing.assert_allclose(np_(model(x)), base, atol=1e-6)
    fit_a_little(model, x)
    unmerged = np_(model(x))
    assert np.abs(unmerged - base).max() > 1e-3  # the adapters learned something
    model.merge_lora()
    np.testing.assert_allclose(np_(model(x)), unmerged, atol=1e-5)
    assert not any("lora" in v.path for v in model.weights)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == model.count_params()
    assert model.get_config()["lora"] is None
    # A plain model again: LoRA can be enabled anew.
    model.enable_lora(2)


def test_merged_kernel_matches_numpy_reference():
    model = CausalLM(**TINY)
    model.enable_lora(2, alpha=4, target_layers=("query",))
    layer = model.backbone.blocks[0].attention.query
    rng = np.random.default_rng(1)
    layer.lora_kernel_a.assign(rng.normal(size=(16, 2)).astype("float32"))
    layer.lora_kernel_b.assign(rng.normal(size=(2, 16)).astype("float32"))
    expected = np_(layer._kernel) + (4 / 2) * np_(layer.lora_kernel_a) @ np_(layer.lora_kernel_b)
    model.merge_lora()
    np.testing.assert_allclose(np_(layer.kernel), expected, atol=1e-5)


def test_adapter_only_round_trip_into_fresh_model(tmp_path):
    base = CausalLM(**TINY)
    base_weights = base.get_weights()
    x = tokens()
    tuned = CausalLM(**TINY)
    tuned.set_weights(base_weights)
    tuned.enable_lora(4, target_layers=("key", "value"))
    fit_a_little(tuned, x)
    path = str(tmp_path / "adapters.npz")
    tuned.save_lora_weights(path)
    with np.load(path) as archive:
        names = [n for n in archive.files if n != "__lora_config__"]
        saved_size = sum(archive[n].size for n in names)
    assert len(names) == 2 * 2 * 2 and all("lora_kernel" in n for n in names)
    assert saved_size == sum(int(np.prod(v.shape)) for v in tuned.trainable_weights)

    fresh = CausalLM(**TINY)
    fresh.set_weights(base_weights)
    fresh.load_lora_weights(path)  # enables LoRA with the file's settings
    np.testing.assert_allclose(np_(fresh(x)), np_(tuned(x)), atol=1e-6)

    other = CausalLM(**TINY)
    other.enable_lora(2, target_layers=("key", "value"))
    with pytest.raises(ValueError, match="rank"):
        other.load_lora_weights(path)


def test_lora_model_saves_and_reloads_in_fresh_process(tmp_path, run_in_fresh_process):
    model = CausalLM(**TINY)
    model.enable_lora(2, target_layers=("query", "value"))
    x = tokens()
    fit_a_little(model, x)
    expected = np_(model(x))
    path = str(tmp_path / "lora.keras")
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    code = f"""
import keras, numpy as np, kerasllm
model = keras.saving.load_model({path!r})
x = np.load({str(tmp_path / 'x.npy')!r})
print(model.get_config()["lora"]["rank"], len(model.trainable_weights))
np.save({str(tmp_path / 'out.npy')!r}, keras.ops.convert_to_numpy(model(x)))
"""
    rank, trainable = run_in_fresh_process(code).split()[-2:]
    assert (rank, trainable) == ("2", "8")  # adapters recreated from the config, the rest frozen
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)


def test_qlora_on_int8_base_trains_only_adapters_and_generates():
    model = CausalLM(**TINY)
    with pytest.warns(UserWarning):  # Keras notes the layers it cannot quantize (norms, embeddings)
        model.quantize("int8")
    assert model.backbone.blocks[0].attention.query.quantization_mode == "int8"
    model.enable_lora(2, target_layers=("query", "value", "intermediate"))
    assert keras.backend.standardize_dtype(model.backbone.blocks[0].attention.query._kernel.dtype) == "int8"
    x = tokens()
    before = snapshot(model)
    out_before = np_(model(x))
    fit_a_little(model, x)
    after = snapshot(model)
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    assert changed == {path for path in before if "lora_kernel" in path}
    assert np.abs(np_(model(x)) - out_before).max() > 1e-4
    generated = model.generate(x[:2, :4], max_new_tokens=5, greedy=True)
    assert [len(row) for row in generated] == [9, 9]


def test_bad_input_is_rejected_with_the_fix():
    model = CausalLM(**TINY)
    with pytest.raises(ValueError, match="positive integer"):
        model.enable_lora(0)
    with pytest.raises(ValueError, match=r"match no Dense layer.*Valid target names are \['intermediate', 'key', 'output', 'query', 'value'\]"):
        model.enable_lora(2, target_layers=("query", "attention"))
    assert model.trainable_weights and not any("lora" in v.path for v in model.weights)  # nothing half-done
    model.enable_lora(2)
    with pytest.raises(ValueError, match="already enabled"):
        model.enable_lora(2)
    with pytest.raises(ValueError, match="not enabled"):
        CausalLM(**TINY).save_lora_weights("x.npz")
