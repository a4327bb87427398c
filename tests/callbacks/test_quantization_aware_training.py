import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.callbacks import QuantizationAwareTraining
from kerasllm.utils import dense_transforms
from kerasllm.quantization.quantize import select_layers

V, T = 61, 16


def tiny(**kwargs):
    model = kerasllm.models.CausalLM(
        vocabulary_size=V, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=T, **kwargs,
    )
    # Compiling the step costs more than these few tiny steps; the Sequential test below runs compiled.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=kerasllm.losses.CausalLMLoss(), jit_compile=False)
    return model


def batch(n=4):
    x = np.random.randint(0, V, (n, T)).astype("int32")
    return x, np.roll(x, -1, axis=1)


def logits(model, x):
    return ops.convert_to_numpy(model(x))


@pytest.mark.parametrize("mode,group_size", [("int8", 128), ("int4", 8), ("int4", None)])
def test_qat_forward_equals_converted_model(mode, group_size):
    model = tiny()
    x, y = batch()
    qat = QuantizationAwareTraining(mode, group_size=group_size, convert_on_train_end=False)
    model.fit(x, y, batch_size=2, epochs=1, callbacks=[qat], verbose=0)
    assert qat.active and qat.step == 2
    fake = logits(model, x)
    float_model = tiny()
    float_model.set_weights(model.get_weights())
    # The fake quantization is really in the forward pass...
    assert np.abs(fake - logits(float_model, x)).max() > 1e-4
    kerasllm.quantization.convert(model, mode, group_size=group_size)
    converted = logits(model, x)
    # ...and it is what the Keras-quantized model computes (measured: ~3e-7 relative on every backend).
    np.testing.assert_allclose(converted, fake, rtol=0, atol=1e-5 * np.abs(fake).max())
    for layer in select_layers(model):
        assert layer.quantization_mode == mode
        assert not dense_transforms.has_transform(layer, "qat")


def np_fake_int8(a, axis):
    scale = 127 / (np.abs(a).max(axis=axis, keepdims=True) + np.float32(1e-7))
    return np.clip(np.round(a * scale), -127, 127) / scale


def test_train_step_uses_fake_quant_with_straight_through_gradient_from_start_step():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, name="dense")])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    w0, b0 = [v.copy() for v in model.get_weights()]
    x = np.random.normal(size=(4, 6)).astype("float32")
    t = np.random.normal(size=(4, 3)).astype("float32")
    qat = QuantizationAwareTraining("int8", start_step=1, layers=["dense"], convert_on_train_end=False)
    model.fit(x, t, batch_size=4, epochs=2, shuffle=False, callbacks=[qat], verbose=0)

    def sgd_step(w, b, quantize):
        xs, ws = (np_fake_int8(x, -1), np_fake_int8(w, 0)) if quantize else (x, w)
        upstream = 2 * (xs @ ws + b - t) / t.size  # d mean((y - t)^2) / dy
        # Straight-through: the kernel's gradient is taken as the dequantized kernel's gradient.
        return w - 0.5 * xs.T @ upstream, b - 0.5 * upstream.sum(0)

    w1, b1 = sgd_step(w0, b0, quantize=False)  # step 0: before start_step, float
    w2, b2 = sgd_step(w1, b1, quantize=True)  # step 1: fake-quantized
    w, b = model.get_weights()
    np.testing.assert_allclose(w, w2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, b2, rtol=1e-5, atol=1e-6)
    w_float, _ = sgd_step(w1, b1, quantize=False)
    assert np.abs(w - w_float).max() > 1e-4
    assert qat.active and qat.step == 2


def test_converts_on_train_end_and_keeps_head_and_embeddings_float():
    model = tiny(tie_word_embeddings=False)
    x, y = batch()
    qat = QuantizationAwareTraining("int8")
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[qat], verbose=0)
    assert qat.converted and qat.get_state() == {"step": 1, "converted": True}
    block = model.backbone.blocks[0]
    for dense in (block.attention.query, block.attention.output_dense, block.feedforward.output_dense):
        assert str(dense._kernel.dtype).endswith("int8")
    assert model.lm_head.quantization_mode is None
    assert model.backbone.token_embedding.quantization_mode is None
    # The optimizer's moments of the float kernels are gone (they would dominate the saved file).
    size = lambda variables: sum(int(np.prod(v.shape)) for v in variables)
    assert size(model.optimizer.variables) <= 2 * size(model.trainable_variables) + 4
    with pytest.raises(ValueError, match="already converted"):
        model.fit(x, y, epochs=1, callbacks=[qat], verbose=0)


def test_quantize_head_and_lower_priority_kernel_transform():
    model = tiny(tie_word_embeddings=False)
    x, y = batch()
    query = model.backbone.blocks[0].attention.query
    mask = (np.arange(16 * 16).reshape(16, 16) % 2).astype("float32")
    # A priority-0 kernel transform, as pruning registers: it must hold under QAT and be baked in.
    dense_transforms.add_transform(query, "custom_mask", kernel_fn=lambda k: k * mask, priority=0)
    qat = QuantizationAwareTraining("int8", quantize_head=True, convert_on_train_end=False)
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[qat], verbose=0)
    fake = logits(model, x)
    qat.convert()
    np.testing.assert_allclose(logits(model, x), fake, rtol=0, atol=1e-5 * np.abs(fake).max())
    assert model.lm_head.quantization_mode == "int8"
    assert np.all(ops.convert_to_numpy(query._kernel)[mask == 0] == 0)
    assert not query.__dict__.get(dense_transforms._ATTRIBUTE)


def test_composes_with_pruning():
    model = tiny()
    x, y = batch()
    pruning = kerasllm.callbacks.Pruning(target_sparsity=0.5, strip_on_train_end=True)
    qat = QuantizationAwareTraining("int8")
    # QAT converts first at train end; the pruned zeros must survive into the int8 kernels.
    model.fit(x, y, batch_size=2, epochs=1, callbacks=[qat, pruning], verbose=0)
    for layer in select_layers(model):
        assert layer.quantization_mode == "int8"
        kernel = ops.convert_to_numpy(layer._kernel)
        assert (kernel == 0).mean() >= 0.5, layer.path
        assert getattr(layer, "pruning_mask", None) is None


def test_state_resumes_the_schedule():
    qat = QuantizationAwareTraining("int8", start_step=3, convert_on_train_end=False)
    qat.set_state({"step": 5, "converted": False})
    model = tiny()
    x, y = batch()
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[qat], verbose=0)
    assert qat.active and qat.get_state() == {"step": 6, "converted": False}
    restored = QuantizationAwareTraining.from_config(qat.get_config())
    assert restored.get_config() == qat.get_config()


def test_with_checkpoint(tmp_path):
    x, y = batch()
    qat = QuantizationAwareTraining("int8", start_step=1, convert_on_train_end=False)
    checkpoint = kerasllm.callbacks.Checkpoint(str(tmp_path), every_n_steps=1, callbacks=[qat])
    tiny().fit(x, y, batch_size=2, epochs=1, shuffle=False, callbacks=[checkpoint, qat], verbose=0)
    resumed = QuantizationAwareTraining("int8", start_step=1, convert_on_train_end=False)
    checkpoint = kerasllm.callbacks.Checkpoint(str(tmp_path), every_n_steps=1, callbacks=[resumed])
    tiny().fit(x, y, batch_size=2, epochs=2, shuffle=False, callbacks=[checkpoint, resumed], verbose=0)
    assert resumed.step == 4 and resumed.active


def test_bad_input():
    with pytest.raises(ValueError, match="Unknown QAT mode"):
        QuantizationAwareTraining("int3")
    with pytest.raises(ValueError, match="start_step"):
        QuantizationAwareTraining(start_step=-1)
    x, y = batch()
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="No quantizable Dense layers.*layers="):
        plain.fit(np.ones((2, 4)), np.ones((2, 2)), callbacks=[QuantizationAwareTraining()], verbose=0)

    model = tiny()
    with pytest.raises(ValueError, match="group_size=12 does not divide .*input width 16"):
        model.fit(x, y, callbacks=[QuantizationAwareTraining("int4", group_size=12)], verbose=0)
    # Nothing was registered by the failed start.
    assert not any(dense_transforms.has_transform(layer, "qat") for layer in select_layers(model))
    with pytest.raises(ValueError, match="no separate output head"):
        model.fit(x, y, callbacks=[QuantizationAwareTraining(quantize_head=True)], verbose=0)

    kerasllm.quantization.quantize(model, "int8")
    with pytest.raises(ValueError, match="already quantized"):
        model.fit(x, y, callbacks=[QuantizationAwareTraining()], verbose=0)


def test_converted_model_reloads_in_a_fresh_process_with_identical_outputs(tmp_path, reload_in_fresh_process):
    x, y = batch(8)
    expected, paths = {}, {}
    for mode, group_size in (("int8", None), ("int4", 8)):
        model = tiny()
        qat = QuantizationAwareTraining(mode, group_size=group_size)
        model.fit(x, y, batch_size=4, epochs=2, callbacks=[qat], verbose=0)
        assert qat.converted
        expected[mode] = logits(model, x)
        paths[mode] = str(tmp_path / f"{mode}.keras")
        model.save(paths[mode])
    for mode, (reloaded, reloaded_mode) in reload_in_fresh_process(paths, x).items():
        assert reloaded_mode == mode
        np.testing.assert_array_equal(reloaded, expected[mode])
