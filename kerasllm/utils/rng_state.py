"""Random state a training run needs for an exact resume, as a flat dict of numpy arrays."""

import random

import keras
import numpy as np

from kerasllm.utils.backend_rng import get_backend_rng_state, set_backend_rng_state


def _seed_variables(model):
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


def _global_seed_generator():
    # Keras keeps its global `SeedGenerator` (used by unseeded `keras.random` calls) in private state,
    # created on first use.
    try:
        from keras.src.backend.common import global_state
    except ImportError:
        return None
    return global_state.get_global_attribute("global_seed_generator")


def get_rng_state(model):
    """The model's `SeedGenerator` states, Keras's global one, `np.random`, `random` and the backend's."""
    arrays = {f"seed_{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(_seed_variables(model))}
    generator = _global_seed_generator()
    if generator is not None:
        arrays["global_seed_generator"] = keras.ops.convert_to_numpy(generator.state)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    arrays.update(numpy_keys=keys, numpy_rest=np.array([pos, has_gauss, gauss], dtype=np.float64))
    arrays.update({f"backend_{k}": v for k, v in get_backend_rng_state().items()})
    version, internal, gauss_next = random.getstate()
    arrays.update(python_internal=np.array(internal, dtype=np.int64),
                  python_rest=np.array([version, np.nan if gauss_next is None else gauss_next]))
    return arrays


def set_rng_state(model, arrays):
    """Restores what `get_rng_state` returned."""
    variables = _seed_variables(model)
    for i, variable in enumerate(variables):
        if f"seed_{i:05d}" in arrays:
            variable.assign(arrays[f"seed_{i:05d}"])
    generator = _global_seed_generator()
    if "global_seed_generator" in arrays:
        if generator is None:
            generator = keras.random.SeedGenerator()
            from keras.src.backend.common import global_state

            global_state.set_global_attribute("global_seed_generator", generator)
        generator.state.assign(arrays["global_seed_generator"])
    set_backend_rng_state({k[len("backend_"):]: v for k, v in arrays.items() if k.startswith("backend_")})
    pos, has_gauss, gauss = arrays["numpy_rest"]
    np.random.set_state(("MT19937", arrays["numpy_keys"], int(pos), int(has_gauss), float(gauss)))
    version, gauss_next = arrays["python_rest"]
    random.setstate((int(version), tuple(int(x) for x in arrays["python_internal"]),
                     None if np.isnan(gauss_next) else float(gauss_next)))
