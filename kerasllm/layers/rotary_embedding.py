import math

import keras
import numpy as np
from keras import ops

# `rope_scaling["rope_type"]` values and the keys each one takes, as Hugging Face configs name them.
ROPE_SCALING_KEYS = {
    "default": {"required": (), "optional": ()},
    "linear": {"required": ("factor",), "optional": ()},
    "llama3": {
        "required": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
        "optional": (),
    },
    "yarn": {
        "required": ("factor", "original_max_position_embeddings"),
        "optional": ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"),
    },
}


def validate_rope_scaling(rope_scaling):
    """Returns `rope_scaling` as a plain dict after checking its type and keys; raises a `ValueError`
    naming the unsupported type or key otherwise (a silently different RoPE would change every logit)."""
    if rope_scaling is None:
        return None
    if not isinstance(rope_scaling, dict):
        raise ValueError(f"`rope_scaling` must be a dict such as {{'rope_type': 'linear', 'factor': 2.0}}, got {rope_scaling!r}.")
    rope_scaling = dict(rope_scaling)
    rope_type = rope_scaling.get("rope_type", "default")
    if rope_type not in ROPE_SCALING_KEYS:
        raise ValueError(
            f"Unsupported rope_type {rope_type!r} in `rope_scaling`; kerasllm supports "
            f"{sorted(ROPE_SCALING_KEYS)}. ('dynamic' NTK scaling changes every position's rotation as the "
            "sequence grows and 'longrope' needs per-frequency factors; neither is implemented.)"
        )
    keys = ROPE_SCALING_KEYS[rope_type]
    missing = [key for key in keys["required"] if rope_scaling.get(key) is None]
    if missing:
        raise ValueError(f"`rope_scaling` of rope_type {rope_type!r} needs {missing}; got {rope_scaling!r}.")
    unknown = sorted(set(rope_scaling) - {"rope_type", *keys["required"], *keys["optional"]})
    if unknown:
        raise ValueError(
            f"`rope_scaling` of rope_type {rope_type!r} has keys kerasllm does not implement: {unknown}. "
            f"Supported keys: {sorted({*keys['required'], *keys['optional']})}."
        )
    return rope_scaling


def rope_inverse_frequencies(head_dim, max_wavelength=10000.0, rope_scaling=None):
    """Per-pair rotation speeds `(head_dim / 2,)` (float32) and the factor applied to cos and sin.

    Follows the formulas of the Hugging Face RoPE variants (`default`, `linear`, `llama3`, `yarn`),
    computed on the host once per call: they are constants of the model.
    """
    half = head_dim // 2
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    base_frequencies = (1.0 / (np.float32(max_wavelength) ** exponents)).astype(np.float32)
    scaling = validate_rope_scaling(rope_scaling) or {}
    rope_type = scaling.get("rope_type", "default")
    attention_factor = 1.0
    if rope_type == "default":
        frequencies = base_frequencies
    elif rope_type == "linear":
        frequencies = base_frequencies / np.float32(scaling["factor"])
    elif rope_type == "llama3":
        frequencies = _llama3_frequencies(base_frequencies, scaling)
    else:
        frequencies, attention_factor = _yarn_frequencies(head_dim, max_wavelength, scaling)
    assert frequencies.shape == (half,)
    return frequencies.astype(np.float32), float(attention_factor)


def _llama3_frequencies(frequencies, scaling):
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / frequencies
    scaled = np.where(wavelength > context / low, frequencies / factor, frequencies)
    smooth = (context / wavelength - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelength < context / high) & ~(wavelength > context / low)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def _yarn_frequencies(head_dim, base, scaling):
    factor = scaling["factor"]
    context = scaling["original_max_position_embeddings"]

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        if scaling.get("mscale") and scaling.get("mscale_all_dim"):
            attention_factor = mscale(factor, scaling["mscale"]) / mscale(factor, scaling["mscale_all_dim"])
        else:
            attention_factor = mscale(factor)
    beta_fast = scaling.get("beta_fast") or 32
    beta_slow = scaling.get("beta_slow") or 1

    def correction_dim(rotations):
        return head_dim * math.log(context / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    positions = np.float32(base) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))
    extrapolation = 1.0 / positions
    interpolation = 1.0 / (np.float32(factor) * positions)
    keep = 1 - ramp  # share of the unscaled (extrapolated) frequency
    return (interpolation * (1 - keep) + extrapolation * keep).astype(np.float32), attention_factor


@keras.saving.register_keras_serializable(package="kerasllm")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (RoPE), applied to queries and keys, with optional context scaling.

    Rotates each pair of channels `(i, i + H/2)` of a head by an angle proportional to the token's
    position, so that attention scores depend on relative positions only. Uses the "rotate half"
    layout of Llama and GPT-NeoX. The rotation is computed in float32 and cast back.

    Args:
        max_wavelength: float. Base of the geometric progression of frequencies (Hugging Face's
            `rope_theta`). Defaults to `10000`.
        rope_scaling: dict. Context-extension scaling, as Hugging Face configs write it:
            `{"rope_type": "linear", "factor": 4.0}`, `"llama3"` (Llama 3.1+: `factor`,
            `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`) or `"yarn"`
            (`factor`, `original_max_position_embeddings`, optional `attention_factor`, `beta_fast`,
            `beta_slow`, `mscale`, `mscale_all_dim`, `truncate`). Other types raise a `ValueError`.
            Defaults to `None` (no scaling).
        **kwargs: standard layer arguments.

    Call arguments:
        inputs: tensor `(B, T, N, H)` of queries or keys; `H` must be even.
        start_index: int or scalar tensor. Position of the first token (for cached decoding).
            Defaults to `0`.

    Example:

    >>> rope = kerasllm.layers.RotaryEmbedding(rope_scaling={"rope_type": "linear", "factor": 2.0})
    >>> rope(keras.random.normal((2, 5, 4, 8))).shape
    (2, 5, 4, 8)

    References:
        - [Su et al., 2021](https://arxiv.org/abs/2104.09864)
        - [Peng et al., 2023 (YaRN)](https://arxiv.org/abs/2309.00071)
    """

    def __init__(self, max_wavelength=10000.0, rope_scaling=None, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.rope_scaling = validate_rope_scaling(rope_scaling)
        self.built = True

    def call(self, inputs, start_index=0):
        head_dim = inputs.shape[-1]
        if head_dim % 2:
            raise ValueError(f"Rotary embedding needs an even head size, got {head_dim}.")
        length = ops.shape(inputs)[1]
        half = head_dim // 2
        frequencies, attention_factor = rope_inverse_frequencies(head_dim, self.max_wavelength, self.rope_scaling)
        positions = ops.cast(ops.arange(length), "float32") + ops.cast(start_index, "float32")
        angles = ops.einsum("t,f->tf", positions, ops.convert_to_tensor(frequencies))  # (T, H/2)
        angles = ops.concatenate([angles, angles], axis=-1)[None, :, None, :]  # (1, T, 1, H)
        cos, sin = ops.cos(angles), ops.sin(angles)
        if attention_factor != 1.0:
            cos, sin = cos * attention_factor, sin * attention_factor
        x = ops.cast(inputs, "float32")
        x1, x2 = x[..., :half], x[..., half:]
        rotated = ops.concatenate([-x2, x1], axis=-1)
        out = x * cos + rotated * sin
        return ops.cast(out, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength, "rope_scaling": self.rope_scaling})
        return config
