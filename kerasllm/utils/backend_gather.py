"""The one backend-specific piece of top-k distillation: a gather along the last axis whose gradient is cheap.

Top-k distillation reads the student's log-probabilities at the teacher's top-k token ids in every
training step, and the gradient of that gather is a scatter-add back into the `(batch, sequence,
vocabulary)` tensor. `keras.ops.take_along_axis` on JAX uses `jnp.take_along_axis`'s default mode, which
fills out-of-range positions; XLA then emits a general scatter that, on the CPU backend, made the gather's
gradient about 4x slower than with ids clipped into range and `mode="promise_in_bounds"` (28 vs 7 ms for
`(16, 128, 2048)` at k=512 on this project's 2-core machine, `docs/benchmarks.md`). Ids from a teacher are
always in range, so the clip changes nothing for them; every backend clips the same way (a negative id
becomes 0, not an index from the end).
"""

import keras
from keras import ops


def take_along_last_axis(x, indices):
    """`x[..., indices]` per position: `keras.ops.take_along_axis(x, indices, axis=-1)` with clipped ids.

    Args:
        x: tensor of shape `(..., V)`.
        indices: int tensor of shape `(..., k)`, ids in `[0, V)` (others are clipped into the range).

    Returns:
        A tensor of shape `(..., k)` and the dtype of `x`.
    """
    indices = ops.clip(indices, 0, ops.shape(x)[-1] - 1)
    if keras.backend.backend() == "jax":
        import jax.numpy as jnp

        # In range after the clip, so XLA needs no bounds handling in the gather or its gradient.
        return jnp.take_along_axis(x, indices, axis=-1, mode="promise_in_bounds")
    return ops.take_along_axis(x, indices, axis=-1)
