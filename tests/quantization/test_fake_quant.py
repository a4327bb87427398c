import keras
import numpy as np
import pytest
from keras import ops

from kerasllm.quantization import fake_quantize_int4_weight
from kerasllm.quantization import fake_quantize_int8_input
from kerasllm.quantization import fake_quantize_int8_weight
from kerasllm.quantization.fake_quant import check_group_size

EPSILON = 1e-7


# --- numpy references, written from Keras 3.15's quantizers -----------------------------------------


def np_abs_max(x, axis, bound, low):
    scale = (bound / (np.max(np.abs(x), axis=axis, keepdims=True) + np.float32(EPSILON))).astype(np.float32)
    q = np.clip(np.round(x * scale), low, bound)
    return (q / scale).astype(np.float32)


def np_int4_grouped(w, group):
    rows, cols = w.shape
    g = w.reshape(rows // group, group, cols)
    low, high = g.min(axis=1, keepdims=True), g.max(axis=1, keepdims=True)
    scale = ((high - low + np.float32(EPSILON)) / np.float32(15)).astype(np.float32)
    zero = np.clip(np.round(-low / scale) - 8, -8, 7)
    q = np.clip(np.round(g / scale) + zero, -8, 7)
    return ((q - zero) * scale).reshape(rows, cols).astype(np.float32)


def values(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(np.float32)
    x[0] *= 5.0  # uneven ranges across rows
    return x


def test_int8_weight_matches_numpy_per_output_channel():
    w = values((24, 10))
    out = ops.convert_to_numpy(fake_quantize_int8_weight(w))
    # Equal up to one float rounding: XLA may divide by the scale as a multiply by its reciprocal.
    np.testing.assert_allclose(out, np_abs_max(w, 0, 127, -127), rtol=1e-6, atol=0)
    # Each output column holds at most 255 levels of its own step: per channel, not per tensor.
    steps = np.max(np.abs(w), axis=0) / 127
    assert np.allclose(np.round(out / steps), out / steps, atol=1e-3)
    assert not np.allclose(out, np_abs_max(w, None, 127, -127))


def test_int8_weight_matches_keras_stored_kernel():
    w = values((16, 8), seed=1)
    layer = keras.layers.Dense(8)
    layer.build((None, 16))
    layer.kernel.assign(w)
    layer.quantize("int8")
    stored = ops.convert_to_numpy(layer._kernel).astype(np.float32) / ops.convert_to_numpy(layer.kernel_scale)
    np.testing.assert_allclose(ops.convert_to_numpy(fake_quantize_int8_weight(w)), stored, rtol=1e-6, atol=0)


def test_int8_input_matches_numpy_per_token():
    x = values((2, 5, 12), seed=2)
    out = ops.convert_to_numpy(fake_quantize_int8_input(x))
    np.testing.assert_allclose(out, np_abs_max(x, -1, 127, -127), rtol=1e-6, atol=0)
    assert np.abs(out - x).max() > 0  # it really quantizes


def test_int4_per_channel_matches_numpy():
    w = values((16, 6), seed=3)
    out = ops.convert_to_numpy(fake_quantize_int4_weight(w, group_size=None))
    np.testing.assert_allclose(out, np_abs_max(w, 0, 7, -8), rtol=1e-6, atol=0)
    assert len(np.unique(out[:, 0])) <= 16


@pytest.mark.parametrize("group", [4, 8, 16])
def test_int4_grouped_matches_numpy_and_keras(group):
    w = values((16, 6), seed=4)
    out = ops.convert_to_numpy(fake_quantize_int4_weight(w, group_size=group))
    np.testing.assert_allclose(out, np_int4_grouped(w, group), rtol=0, atol=1e-6)
    q, scale, zero = keras.quantizers.abs_max_quantize_grouped_with_zero_point(w, block_size=group, to_numpy=True)
    index = np.arange(16) // group
    keras_dequantized = (ops.convert_to_numpy(q).astype(np.float32) - ops.convert_to_numpy(zero)[index]) * (
        ops.convert_to_numpy(scale)[index]
    )
    np.testing.assert_allclose(out, keras_dequantized, rtol=0, atol=1e-6)
    # Each group of each column uses at most 16 levels.
    for start in range(0, 16, group):
        assert len(np.unique(out[start : start + group, 0])) <= 16


@pytest.mark.parametrize(
    "fn",
    [
        fake_quantize_int8_weight,
        fake_quantize_int8_input,
        lambda w: fake_quantize_int4_weight(w, group_size=None),
        lambda w: fake_quantize_int4_weight(w, group_size=4),
    ],
    ids=["int8_weight", "int8_input", "int4_channel", "int4_group"],
)
def test_straight_through_gradient_is_identity(fn, backend_gradient):
    x = values((8, 6), seed=5)
    upstream = np.random.default_rng(6).normal(size=(8, 6)).astype(np.float32)
    np.testing.assert_allclose(backend_gradient(fn, x, upstream), upstream, rtol=1e-6)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "8"])
def test_bad_group_size(bad):
    with pytest.raises(ValueError, match="group_size"):
        check_group_size(bad)


def test_group_size_must_divide_width():
    with pytest.raises(ValueError, match="does not divide .* input width 24.*group_size=None"):
        fake_quantize_int4_weight(values((24, 4)), group_size=16)
