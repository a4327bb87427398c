import os

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.utils import dense_transforms
from kerasllm.quantization import fake_quant
from kerasllm.quantization.quantize import select_layers

V, T = 61, 16


def tiny(hidden_dim=16, intermediate_dim=32, num_layers=2, **kwargs):
    return kerasllm.models.CausalLM(
        vocabulary_size=V, num_layers=num_layers, num_heads=2, hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
        max_sequence_length=T, **kwargs,
    )


def tokens(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, V, (n, T)).astype("int32")


def logits(model, x):
    return ops.convert_to_numpy(model(x))


def dtype_name(variable):
    return keras.backend.standardize_dtype(variable.dtype)


def simulated_logits(model, mode, group_size):
    """Logits of `model` with numpy-checked fake quantization registered on the chosen layers."""
    layers = select_layers(model)
    for layer in layers:
        if mode == "int8":
            dense_transforms.add_transform(
                layer, "sim", fake_quant.fake_quantize_int8_weight, fake_quant.fake_quantize_int8_input
            )
        else:
            dense_transforms.add_transform(
                layer, "sim", lambda k: fake_quant.fake_quantize_int4_weight(k, group_size=group_size)
            )
    x = tokens()
    result = logits(model, x)
    for layer in layers:
        dense_transforms.remove_transform(layer, "sim")
    return result


@pytest.mark.parametrize("mode,group_size", [("int8", 128), ("int4", 8), ("int4", None)])
def test_ptq_variables_and_logits(mode, group_size):
    model = tiny()
    x = tokens()
    float_logits = logits(model, x)
    expected = simulated_logits(model, mode, group_size)
    layers = kerasllm.quantization.quantize(model, mode, group_size=group_size)
    assert len(layers) == 2 * 6  # query, key, value, output, intermediate, output per block
    quantized = logits(model, x)
    np.testing.assert_allclose(quantized, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert 0 < np.abs(quantized - float_logits).max() < 0.1 * np.abs(float_logits).max()
    query = model.backbone.blocks[0].attention.query
    assert dtype_name(query._kernel) == "int8"
    if mode == "int8":
        assert tuple(query._kernel.shape) == (16, 16)
        assert tuple(query.kernel_scale.shape) == (16,)
    else:  # two int4 values per int8 byte along the output axis
        assert tuple(query._kernel.shape) == (16, 8)
        assert tuple(query.kernel_scale.shape) == ((16 // group_size, 16) if group_size else (16,))
        unpacked = ops.convert_to_numpy(keras.quantizers.unpack_int4(query._kernel, 16, axis=-1))
        assert unpacked.min() >= -8 and unpacked.max() <= 7
    embedding = model.backbone.token_embedding
    assert embedding.quantization_mode is None and dtype_name(embedding.embeddings) == "float32"
    if group_size == 8:  # one generation check per backend keeps the test fast
        generated = model.generate(x[0, :4], max_new_tokens=3, greedy=True)
        assert len(generated) == 7 and all(0 <= t < V for t in generated)


def test_bad_input_leaves_the_model_untouched():
    model = tiny(intermediate_dim=40)
    with pytest.raises(ValueError, match="Unknown quantization mode 'int2'"):
        kerasllm.quantization.quantize(model, "int2")
    with pytest.raises(ValueError, match="Unknown quantization mode 'gptq' for convert"):
        kerasllm.quantization.convert(model, "gptq")
    with pytest.raises(ValueError, match="needs no calibration data"):
        kerasllm.quantization.quantize(model, "int8", calibration_data=["hi"])
    # Attention layers (input 16) accept group 16; the feed-forward output (input 40) does not.
    with pytest.raises(ValueError, match="feedforward/output'.* input width 40"):
        kerasllm.quantization.quantize(model, "int4", group_size=16)
    assert all(layer.quantization_mode is None for layer in select_layers(model))
    with pytest.raises(ValueError, match="no separate output head"):
        kerasllm.quantization.convert(model, "int8", quantize_head=True)
    with pytest.raises(ValueError, match="`layers` must be"):
        kerasllm.quantization.convert(model, "int8", layers="query")
    with pytest.raises(ValueError, match="No quantizable Dense layers"):
        kerasllm.quantization.convert(model, "int8", layers=["no_such_layer"])

    kerasllm.quantization.convert(model, "int8", layers=["attention/query"])
    assert [layer.quantization_mode for layer in select_layers(model)].count("int8") == 2
    with pytest.raises(ValueError, match="already quantized"):
        kerasllm.quantization.convert(model, "int8")
    # The refused second conversion changed nothing.
    assert [layer.quantization_mode for layer in select_layers(model)].count("int8") == 2


def test_convert_refuses_other_settings_than_qat_trained():
    model = tiny()
    qat = kerasllm.callbacks.QuantizationAwareTraining("int4", group_size=8, convert_on_train_end=False)
    qat.set_model(model)
    qat.on_train_begin()
    with pytest.raises(ValueError, match="trained with mode='int4', group_size=8"):
        kerasllm.quantization.convert(model, "int8")
    assert all(dense_transforms.has_transform(layer, "qat") for layer in select_layers(model))


def test_save_and_reload_in_fresh_process(tmp_path, reload_in_fresh_process):
    model = tiny(hidden_dim=128, intermediate_dim=512)
    x = tokens()
    float_path = str(tmp_path / "float.keras")
    model.save(float_path)
    expected, paths = {}, {}
    for mode, group_size in (("int8", 128), ("int4", 32)):
        quantized = keras.saving.load_model(float_path)
        kerasllm.quantization.quantize(quantized, mode, group_size=group_size)
        expected[mode] = logits(quantized, x)
        paths[mode] = str(tmp_path / f"{mode}.keras")
        quantized.save(paths[mode])
    for mode, (reloaded, reloaded_mode) in reload_in_fresh_process(paths, x).items():
        assert reloaded_mode == mode
        np.testing.assert_array_equal(reloaded, expected[mode])
    float_size = os.path.getsize(float_path)
    # Dense kernels are 98% of this model's weights; the rest of each file is HDF5 / config overhead.
    assert os.path.getsize(tmp_path / "int8.keras") < 0.32 * float_size
    # int4 with group_size=32 also stores a float32 scale and an int8 zero point per 32 weights.
    assert os.path.getsize(tmp_path / "int4.keras") < 0.25 * float_size


def test_gptq_quantizes_blocks_and_generates():
    model = tiny(num_layers=1)
    x = tokens(8)
    float_logits = logits(model, x)
    layers = kerasllm.quantization.quantize(
        model, "gptq", calibration_data=list(x), group_size=8, num_samples=2, sequence_length=T
    )
    assert len(layers) == 6 and all(layer.quantization_mode == "gptq" for layer in layers)
    query = model.backbone.blocks[0].attention.query
    assert dtype_name(query.quantized_kernel) == "uint8"
    gptq_logits = logits(model, x)
    assert 0 < np.abs(gptq_logits - float_logits).max() < 0.1 * np.abs(float_logits).max()
    assert len(model.generate(x[0, :4], max_new_tokens=3, greedy=True)) == 7
    with pytest.raises(ValueError, match="needs `calibration_data`"):
        kerasllm.quantization.quantize(tiny(), "gptq")


def test_gptq_calibrates_and_beats_round_to_nearest_on_the_calibration_inputs():
    # Keras 3.15 alone never feeds GPTQ the calibration activations (zero Hessians): its GPTQ then
    # equals round-to-nearest int4. Compare one layer's output error on its own calibration inputs.
    float_model = tiny(hidden_dim=32, intermediate_dim=64, num_layers=1)
    calibration = tokens(16, seed=1)
    query = float_model.backbone.blocks[0].attention.query
    captured = []
    dense_transforms.add_transform(query, "capture", input_fn=lambda x: captured.append(x) or x)
    float_model(calibration)
    dense_transforms.remove_transform(query, "capture")
    inputs = ops.convert_to_numpy(captured[0]).reshape(-1, 32)

    def output_error(mode, **kwargs):
        model = tiny(hidden_dim=32, intermediate_dim=64, num_layers=1)
        model.set_weights(float_model.get_weights())
        kerasllm.quantization.quantize(model, mode, group_size=8, **kwargs)
        layer = model.backbone.blocks[0].attention.query
        assert layer.quantization_mode == mode
        error = ops.convert_to_numpy(layer(inputs)) - ops.convert_to_numpy(query(inputs))
        return float(np.mean(error**2))

    rtn = output_error("int4")
    gptq = output_error("gptq", calibration_data=list(calibration), num_samples=16, sequence_length=T)
    assert gptq < 0.8 * rtn, (gptq, rtn)


def test_model_quantize_refuses_keras_gptq_and_awq_that_do_not_calibrate():
    model = tiny()
    gptq_config = keras.quantizers.GPTQConfig(dataset=None, tokenizer=None)
    awq_config = keras.quantizers.AWQConfig(dataset=None, tokenizer=None)
    for mode, config in (("gptq", gptq_config), (None, gptq_config), ("awq", awq_config)):
        with pytest.raises(ValueError, match="does not calibrate.*kerasllm.quantization.quantize"):
            model.quantize(mode, config=config)
    assert all(layer.quantization_mode is None for layer in select_layers(model))
    model.quantize("int8")  # other modes still go to Keras
    assert {layer.quantization_mode for layer in select_layers(model)} == {"int8"}


def test_gptq_model_saves_reloads_in_fresh_process_and_saves_again(tmp_path, reload_in_fresh_process):
    # Keras 3.15 alone saves a GPTQ Dense without its zero points, and then refuses to load the file.
    model = tiny(num_layers=2)
    x = tokens(8)
    kerasllm.quantization.quantize(model, "gptq", calibration_data=list(x), group_size=8, num_samples=4,
                                   sequence_length=T)
    expected = logits(model, x)
    path = str(tmp_path / "gptq.keras")
    model.save(path)
    (reloaded, mode), = reload_in_fresh_process({"gptq": path}, x).values()
    assert mode == "gptq"
    np.testing.assert_array_equal(reloaded, expected)
    # The reloaded model saves again (its layers were rebuilt from the config, not quantized here).
    again = keras.saving.load_model(path)
    query = again.backbone.blocks[1].attention.query
    assert query.quantization_mode == "gptq" and dtype_name(query.kernel_zero) == "uint8"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(query.kernel_zero),
                                  keras.ops.convert_to_numpy(model.backbone.blocks[1].attention.query.kernel_zero))
    again.save(tmp_path / "again.keras")
    np.testing.assert_array_equal(logits(keras.saving.load_model(tmp_path / "again.keras"), x), expected)
