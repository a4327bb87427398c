"""`kerasllm.utils.backend_gather.take_along_last_axis`: the top-k gather of distillation, on every backend."""

import keras
import numpy as np

from kerasllm.utils.backend_gather import take_along_last_axis


def test_values_and_gradient_match_numpy(backend_gradient):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 11)).astype("float32")
    indices = np.argsort(rng.standard_normal((3, 5, 11)), axis=-1)[..., :4].astype("int32")
    indices[0, 0] = [10, 0, 3, 3]  # a repeated id: the gradient adds up
    expected = np.take_along_axis(x, indices, axis=-1)
    got = keras.ops.convert_to_numpy(take_along_last_axis(keras.ops.convert_to_tensor(x), indices))
    np.testing.assert_array_equal(got, expected)

    upstream = rng.standard_normal(indices.shape).astype("float32")
    reference = np.zeros_like(x)  # scatter-add of the upstream gradient back to the ids
    for position in np.ndindex(indices.shape[:-1]):
        np.add.at(reference[position], indices[position], upstream[position])
    gather = lambda v: take_along_last_axis(v + 0.0, keras.ops.convert_to_tensor(indices))  # + 0: a tensor
    gradient = backend_gradient(gather, x, upstream)
    np.testing.assert_allclose(gradient, reference, rtol=1e-6, atol=1e-6)


def test_out_of_range_ids_are_clipped_on_every_backend():
    x = np.arange(12, dtype="float32").reshape(2, 6)
    got = keras.ops.convert_to_numpy(take_along_last_axis(x, np.array([[-3, 7], [5, 99]], "int32")))
    np.testing.assert_array_equal(got, [[0.0, 5.0], [11.0, 11.0]])
