"""The one backend-specific piece of checkpointing: random state that Keras does not keep in variables.

On torch, Keras's `Dropout` without a `seed` takes torch's fast path, `torch.nn.functional.dropout`,
which draws from torch's global generator, not from the layer's `SeedGenerator` (see
`keras/src/backend/torch/random.py`, `dropout`). An exact resume must save and restore that
generator. JAX and TensorFlow draw dropout masks from `SeedGenerator` variables only.
"""

import keras
import numpy as np


def get_backend_rng_state():
    """Returns the backend's global random state as a dict of numpy arrays (empty if none)."""
    if keras.backend.backend() != "torch":
        return {}
    import torch

    state = {"torch_cpu": torch.get_rng_state().numpy().copy()}
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch_cuda_{i}"] = cuda_state.numpy().copy()
    return state


def set_backend_rng_state(state):
    """Restores what `get_backend_rng_state` returned (keys of other backends are ignored)."""
    if keras.backend.backend() != "torch" or "torch_cpu" not in state:
        return
    import torch

    torch.set_rng_state(torch.from_numpy(np.asarray(state["torch_cpu"], dtype=np.uint8)))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"torch_cuda_{i}" in state:
                torch.cuda.set_rng_state(torch.from_numpy(np.asarray(state[f"torch_cuda_{i}"], np.uint8)), i)
