"""GPTQ solver against NumPy references, and the Keras `gptq` layer it fills."""

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.quantization import gptq


def reference_round_to_nearest(kernel, group_size):
    """Per output channel and group of input rows: asymmetric 4-bit min/max grid whose range holds 0."""
    weights = kernel.T
    codes = np.zeros_like(weights)
    for start in range(0, weights.shape[1], group_size):
        part = weights[:, start:start + group_size]
        low, high = np.minimum(part.min(1), 0), np.maximum(part.max(1), 0)
        scale = (high - low) / 15
        zero = np.round(-low / scale)
        codes[:, start:start + group_size] = np.clip(np.round(part / scale[:, None]) + zero[:, None], 0, 15)
    return codes


def reference_obs(kernel, hessian, group_size, damping=0.01):
    """GPTQ written as plain optimal-brain-surgeon steps: after fixing column i, the inverse Hessian of
    the remaining columns is downdated explicitly (no Cholesky factor)."""
    weights = kernel.T.astype(np.float64).copy()
    n = weights.shape[1]
    inverse = np.linalg.inv(hessian + np.eye(n) * damping * np.mean(np.diag(hessian)))
    codes = np.zeros_like(weights)
    for i in range(n):
        if i % group_size == 0:
            part = weights[:, i:i + group_size]
            low, high = np.minimum(part.min(1), 0), np.maximum(part.max(1), 0)
            scale = (high - low) / 15
            zero = np.round(-low / scale)
        codes[:, i] = np.clip(np.round(weights[:, i] / scale) + zero, 0, 15)
        error = (weights[:, i] - (codes[:, i] - zero) * scale) / inverse[i, i]
        weights[:, i + 1:] -= np.outer(error, inverse[i, i + 1:])
        inverse = inverse - np.outer(inverse[:, i], inverse[i, :]) / inverse[i, i]
    return codes


def problem(inputs=32, outputs=24, rows=256, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(inputs, inputs))  # correlated inputs, as real activations are
    x = rng.normal(size=(rows, inputs)) @ mixing / np.sqrt(inputs)
    return rng.normal(size=(inputs, outputs)) * 0.1, x, 2 * x.T @ x / rows


def test_identity_hessian_gives_round_to_nearest():
    kernel, _, _ = problem()
    codes, scale, zero = gptq.solve(kernel, np.eye(32), group_size=8, damping=0.0)
    np.testing.assert_array_equal(codes, reference_round_to_nearest(kernel, 8))
    assert codes.dtype == np.uint8 and zero.dtype == np.uint8 and codes.max() <= 15 and zero.max() <= 15
    assert scale.shape == zero.shape == (24, 4)


@pytest.mark.parametrize("inputs, group_size", [(32, 8), (32, None), (320, 16), (512, 256), (320, None)])
def test_solve_matches_explicit_obs_steps_and_beats_round_to_nearest(inputs, group_size):
    # 320 and 512 inputs span several of the solver's 128-column blocks.
    kernel, x, hessian = problem(inputs=inputs, rows=4 * inputs)
    codes, scale, zero = gptq.solve(kernel, hessian, group_size=group_size)
    expected = reference_obs(kernel, hessian, group_size or inputs)
    # Same algorithm, two float64 factorizations: a code may differ only on an exact rounding tie.
    assert np.mean(codes == expected) > 0.995
    rtn = gptq.dequantize(*gptq.round_to_nearest(kernel, group_size), group_size=group_size)
    error = np.mean((x @ (gptq.dequantize(codes, scale, zero, group_size) - kernel)) ** 2)
    assert error < 0.8 * np.mean((x @ (rtn - kernel)) ** 2)


def test_dead_inputs_get_zero_weights_and_no_nan():
    kernel, x, hessian = problem()
    hessian[3, :] = hessian[:, 3] = 0.0
    codes, scale, zero = gptq.solve(kernel, hessian, group_size=8)
    dequantized = gptq.dequantize(codes, scale, zero, 8)
    assert np.all(np.isfinite(dequantized)) and np.all(dequantized[3] == 0)


def test_written_layer_computes_the_dequantized_kernel():
    kernel, x, hessian = problem()
    layer = keras.layers.Dense(24)
    layer.build((None, 32))
    layer.kernel.assign(kernel.astype("float32"))
    layer.bias.assign(np.linspace(-1, 1, 24).astype("float32"))
    codes, scale, zero = gptq.solve(kernel, hessian, group_size=8)
    gptq._write_into_layer(layer, codes, scale, zero, 8)
    assert layer.quantization_mode == "gptq" and layer.is_gptq_calibrated
    assert keras.backend.standardize_dtype(layer.quantized_kernel.dtype) == "uint8"
    assert tuple(layer.quantized_kernel.shape) == (12, 32)  # two 4-bit codes per byte
    expected = x @ gptq.dequantize(codes, scale, zero, 8) + np.linspace(-1, 1, 24)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x.astype("float32"))), expected, atol=1e-4)


def test_calibration_windows_and_bad_input():
    from kerasllm.quantization.quantize import _calibration_windows

    windows = _calibration_windows([np.arange(50), np.arange(50, 100)], None, 4, 10)
    np.testing.assert_array_equal(windows[:, 0], [0, 30, 60, 90])
    np.testing.assert_array_equal(windows[-1], np.arange(90, 100))
    model = kerasllm.models.CausalLM(vocabulary_size=61, num_layers=1, num_heads=2, hidden_dim=16,
                                     intermediate_dim=32, max_sequence_length=16)
    with pytest.raises(ValueError, match="fewer than one window of sequence_length=16"):
        kerasllm.quantization.quantize(model, "gptq", calibration_data=[np.arange(5)], group_size=8,
                                       sequence_length=16)
    with pytest.raises(ValueError, match="GPTQ calibration_data"):
        kerasllm.quantization.quantize(model, "gptq", calibration_data=[np.arange(60, 80)], group_size=8,
                                       sequence_length=16)
    # The refused calls changed nothing.
    assert model.backbone.blocks[0].attention.query.quantization_mode is None
