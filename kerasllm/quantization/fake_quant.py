"""Fake quantization with straight-through gradients, matching Keras 3's int8 and int4 `Dense` numerics.

Each function returns `x + stop_gradient(dequantize(quantize(x)) - x)`: the forward value is the
quantize-dequantize of `x` (exactly, see below), the gradient with respect to `x` is the identity
(the straight-through estimator). The quantizers reproduce what `keras.layers.Dense` does after
`model.quantize(...)` in Keras 3.15:

- `"int8"` (`Dense._int8_call`): the kernel `(in, out)` is quantized per output channel,
  `scale = 127 / (max |W| over the input axis + epsilon)`, `q = clip(round(W * scale), -127, 127)`;
  inputs are quantized dynamically per token the same way on their last axis (`AbsMaxQuantizer`).
- `"int4"` with `group_size=None` / `-1` (per channel): symmetric, `scale = 7 / (max |W| + epsilon)`,
  `q = clip(round(W * scale), -8, 7)`; inputs stay float (Keras's `Int4QuantizationConfig` quantizes
  weights only by default).
- `"int4"` with a `group_size` (Keras's `block_size`, default 128): asymmetric groups of rows along the
  input axis, `scale = (max - min + epsilon) / 15`, `zero = clip(round(-min / scale) - 8, -8, 7)`,
  `q = clip(round(W / scale) + zero, -8, 7)`, dequantized as `(q - zero) * scale`; inputs stay float.

`epsilon` is `keras.config.epsilon()` when Keras was imported (1e-7), as Keras's quantizers take it.
`x + (q - x)` equals `q` up to one rounding (exactly whenever `q` and `x` are within a factor of two of
each other, or `q = 0`: the common case), so the forward pass is the quantize-dequantize itself.
"""

import keras
from keras import ops

INT8_RANGE = (-127, 127)
INT4_RANGE = (-8, 7)
# Keras's quantizers bind `backend.epsilon()` as a default argument at import time.
_EPSILON = keras.config.epsilon()


def straight_through(x, quantized):
    """Returns `quantized` in the forward pass with the identity gradient with respect to `x`."""
    return ops.add(x, ops.stop_gradient(ops.subtract(quantized, x)))


def _abs_max_dequantize(x, axis, value_range):
    x = ops.convert_to_tensor(x)
    scale = ops.divide(value_range[1], ops.add(ops.max(ops.abs(x), axis=axis, keepdims=True), _EPSILON))
    scale = ops.cast(scale, x.dtype)
    quantized = ops.clip(ops.round(ops.multiply(x, scale)), value_range[0], value_range[1])
    return ops.divide(quantized, scale)


def fake_quantize_int8_weight(kernel):
    """Fake-quantizes a `(in, out)` kernel to int8 per output channel, as Keras's int8 `Dense` stores it.

    Args:
        kernel: float tensor `(in, out)`.

    Returns:
        A tensor of the same shape and dtype: the int8 quantize-dequantize of `kernel` in the forward
        pass, with the identity (straight-through) gradient.

    Example:

    >>> kernel = keras.random.normal((16, 8))
    >>> kerasllm.quantization.fake_quantize_int8_weight(kernel).shape
    (16, 8)
    """
    return straight_through(kernel, _abs_max_dequantize(kernel, 0, INT8_RANGE))


def fake_quantize_int8_input(inputs):
    """Fake-quantizes activations to int8 per token (abs-max over the last axis), as Keras's int8 `Dense`.

    Args:
        inputs: float tensor `(..., in)`.

    Returns:
        A tensor of the same shape and dtype with the identity (straight-through) gradient.

    Example:

    >>> x = keras.random.normal((2, 5, 16))
    >>> kerasllm.quantization.fake_quantize_int8_input(x).shape
    (2, 5, 16)
    """
    return straight_through(inputs, _abs_max_dequantize(inputs, -1, INT8_RANGE))


def fake_quantize_int4_weight(kernel, group_size=128):
    """Fake-quantizes a `(in, out)` kernel to int4 as Keras's int4 `Dense` stores it.

    Args:
        kernel: float tensor `(in, out)`.
        group_size: int or None. Rows of the input axis that share a scale and zero point
            (asymmetric, Keras's sub-channel int4, `Int4QuantizationConfig(block_size=...)`); `None`
            or `-1` gives one symmetric scale per output channel. Must divide `in`. Defaults to `128`,
            Keras's default.

    Returns:
        A tensor of the same shape and dtype with the identity (straight-through) gradient.

    Example:

    >>> kernel = keras.random.normal((64, 8))
    >>> kerasllm.quantization.fake_quantize_int4_weight(kernel, group_size=32).shape
    (64, 8)
    """
    if group_size is None or group_size == -1:
        return straight_through(kernel, _abs_max_dequantize(kernel, 0, INT4_RANGE))
    kernel = ops.convert_to_tensor(kernel)
    input_dim, output_dim = kernel.shape
    check_group_size(group_size, input_dim)
    qmin, qmax = INT4_RANGE
    groups = ops.reshape(kernel, (input_dim // group_size, group_size, output_dim))
    low = ops.min(groups, axis=1, keepdims=True)
    high = ops.max(groups, axis=1, keepdims=True)
    scale = ops.divide(ops.add(ops.subtract(high, low), _EPSILON), qmax - qmin)
    zero = ops.clip(ops.add(ops.round(ops.divide(ops.negative(low), scale)), qmin), qmin, qmax)
    quantized = ops.clip(ops.add(ops.round(ops.divide(groups, scale)), zero), qmin, qmax)
    dequantized = ops.reshape(ops.multiply(ops.subtract(quantized, zero), scale), (input_dim, output_dim))
    return straight_through(kernel, dequantized)


def check_group_size(group_size, input_dim=None, layer_name=None):
    """Raises a `ValueError` unless `group_size` is `None`, `-1` or a positive divisor of `input_dim`.

    Keras would zero-pad a last, partial group; kerasllm refuses it instead, since the padding
    silently changes that group's range.
    """
    if group_size is None or group_size == -1:
        return
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(
            f"`group_size` must be a positive integer, or None / -1 for one scale per output channel; "
            f"got {group_size!r}."
        )
    if input_dim is not None and input_dim % group_size:
        divisors = [d for d in (256, 128, 64, 32, 16, 8) if input_dim % d == 0]
        hint = f"a divisor of {input_dim} such as {divisors[0]}" if divisors else f"a divisor of {input_dim}"
        where = f"layer {layer_name!r}'s" if layer_name else "the layer's"
        raise ValueError(
            f"int4 group_size={group_size} does not divide {where} input width {input_dim}; pass "
            f"group_size= {hint}, or group_size=None for one scale per output channel."
        )


# --- static (observed) activation ranges -----------------------------------------------------------
# The int8 grid of an affine (asymmetric) range: 256 levels with a zero point, PyTorch's `qint8`.
INT8_AFFINE_RANGE = (-128, 127)


def fake_quantize_int8_static(inputs, min_value, max_value, symmetric=True):
    """Fake-quantizes activations to int8 with one static per-tensor range (e.g. from an observer).

    Symmetric (the default, Keras's abs-max convention): `a = max(|min_value|, |max_value|)`,
    `scale = 127 / (a + epsilon)`, `q = clip(round(x * scale), -127, 127)`, dequantized as `q / scale`.
    Asymmetric (affine): the range is widened to include 0 (so 0 is exact, as PyTorch does),
    `step = (max - min + epsilon) / 255`, `zero = clip(round(-min / step) - 128, -128, 127)`,
    `q = clip(round(x / step) + zero, -128, 127)`, dequantized as `(q - zero) * step`. Inputs
    outside the range are clipped in the forward pass; the gradient is the identity everywhere
    (straight-through, also outside the range, unlike PyTorch's `FakeQuantize`, which zeroes it
    there). A range that is not finite (an observer that has seen nothing yet: `(inf, -inf)`)
    leaves the inputs unchanged.

    Args:
        inputs: float tensor of any shape.
        min_value: float scalar (tensor or number). Lower end of the range.
        max_value: float scalar (tensor or number). Upper end of the range.
        symmetric: bool. Symmetric abs-max grid (zero point 0) or affine grid. Defaults to `True`.

    Returns:
        A tensor of the same shape and dtype as `inputs` with the identity (straight-through)
        gradient.

    Example:

    >>> x = keras.random.normal((2, 5, 16))
    >>> kerasllm.quantization.fake_quantize_int8_static(x, -3.0, 3.0).shape
    (2, 5, 16)
    """
    inputs = ops.convert_to_tensor(inputs)
    low = ops.stop_gradient(ops.cast(ops.convert_to_tensor(min_value), "float32"))
    high = ops.stop_gradient(ops.cast(ops.convert_to_tensor(max_value), "float32"))
    x = ops.cast(inputs, "float32")
    if symmetric:
        qmin, qmax = INT8_RANGE
        amax = ops.maximum(ops.abs(low), ops.abs(high))
        finite = ops.isfinite(amax)
        scale = ops.divide(qmax, ops.add(ops.where(finite, amax, 1.0), _EPSILON))
        quantized = ops.clip(ops.round(ops.multiply(x, scale)), qmin, qmax)
        dequantized = ops.divide(quantized, scale)
    else:
        qmin, qmax = INT8_AFFINE_RANGE
        finite = ops.logical_and(ops.isfinite(low), ops.isfinite(high))
        low = ops.where(finite, ops.minimum(low, 0.0), -1.0)
        high = ops.where(finite, ops.maximum(high, 0.0), 1.0)
        step = ops.divide(ops.add(ops.subtract(high, low), _EPSILON), qmax - qmin)
        zero = ops.clip(ops.add(ops.round(ops.divide(ops.negative(low), step)), qmin), qmin, qmax)
        quantized = ops.clip(ops.add(ops.round(ops.divide(x, step)), zero), qmin, qmax)
        dequantized = ops.multiply(ops.subtract(quantized, zero), step)
    dequantized = ops.where(finite, dequantized, x)
    return straight_through(inputs, ops.cast(dequantized, inputs.dtype))


def int8_static_parameters(min_value, max_value, symmetric=True):
    """The int8 grid `fake_quantize_int8_static` uses for a range, for export (host-side, Python floats).

    Returns:
        dict with `scale` and `zero_point` in the usual export convention
        `x ~ (q - zero_point) * scale`, and `quant_min` / `quant_max`; `None` for a range that is
        not finite (never observed).
    """
    import math

    low, high = float(min_value), float(max_value)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    if symmetric:
        qmin, qmax = INT8_RANGE
        return {"scale": (max(abs(low), abs(high)) + _EPSILON) / qmax, "zero_point": 0,
                "quant_min": qmin, "quant_max": qmax}
    qmin, qmax = INT8_AFFINE_RANGE
    low, high = min(low, 0.0), max(high, 0.0)
    step = (high - low + _EPSILON) / (qmax - qmin)
    zero = int(min(max(round(-low / step) + qmin, qmin), qmax))
    return {"scale": step, "zero_point": zero, "quant_min": qmin, "quant_max": qmax}
