import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasllm")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (RoPE), applied to queries and keys.

    Rotates each pair of channels `(i, i + H/2)` of a head by an angle proportional to the token's
    position, so that attention scores depend on relative positions only. Uses the "rotate half"
    layout of Llama and GPT-NeoX. The rotation is computed in float32 and cast back.

    Args:
        max_wavelength: float. Base of the geometric progression of frequencies. Defaults to `10000`.
        **kwargs: standard layer arguments.

    Call arguments:
        inputs: tensor `(B, T, N, H)` of queries or keys; `H` must be even.
        start_index: int or scalar tensor. Position of the first token (for cached decoding).
            Defaults to `0`.

    Example:

    >>> rope = kerasllm.layers.RotaryEmbedding()
    >>> rope(keras.random.normal((2, 5, 4, 8))).shape
    (2, 5, 4, 8)

    References:
        - [Su et al., 2021](https://arxiv.org/abs/2104.09864)
    """

    def __init__(self, max_wavelength=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.built = True

    def call(self, inputs, start_index=0):
        head_dim = inputs.shape[-1]
        if head_dim % 2:
            raise ValueError(f"Rotary embedding needs an even head size, got {head_dim}.")
        length = ops.shape(inputs)[1]
        half = head_dim // 2
        inverse_frequency = 1.0 / (
            self.max_wavelength ** (ops.arange(0, half, dtype="float32") / float(half))
        )
        positions = ops.cast(ops.arange(length), "float32") + ops.cast(start_index, "float32")
        angles = ops.einsum("t,f->tf", positions, inverse_frequency)  # (T, H/2)
        angles = ops.concatenate([angles, angles], axis=-1)[None, :, None, :]  # (1, T, 1, H)
        x = ops.cast(inputs, "float32")
        x1, x2 = x[..., :half], x[..., half:]
        rotated = ops.concatenate([-x2, x1], axis=-1)
        out = x * ops.cos(angles) + rotated * ops.sin(angles)
        return ops.cast(out, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength})
        return config
