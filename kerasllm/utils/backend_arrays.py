"""The one backend-specific piece of loading weights: handing a NumPy array to a variable without copying it.

Keras's torch backend turns a NumPy array into a tensor through `np.array` and, for bfloat16, a float32
round trip (three copies of every weight); `torch.from_numpy` shares the array's memory instead. JAX
and TensorFlow copy a NumPy array into their own buffers once, which is unavoidable, so they get the
array as it is.
"""

import keras
import ml_dtypes
import numpy as np


def as_backend_tensor(array):
    """`array` (a NumPy array the caller gives up) as what the backend's variables take with the least copying."""
    if keras.backend.backend() != "torch" or not isinstance(array, np.ndarray):
        return array
    import torch

    array = np.ascontiguousarray(array)
    if array.dtype == ml_dtypes.bfloat16:  # torch reads no ml_dtypes arrays: share the bits
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)
