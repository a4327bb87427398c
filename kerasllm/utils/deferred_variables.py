"""Building a model without initializing its variables, then giving each one its loaded value.

A model built from a checkpoint would otherwise draw random values for every variable first (seconds
for a large model, and a whole extra copy in memory) only to overwrite them. Keras creates variables
without a value inside a `StatelessScope` that does not initialize on exit; each keeps its initializer
and is registered as uninitialized until `_deferred_initialize()` runs. This module is the one place
kerasllm relies on that Keras 3.15 mechanism (the same on every backend; tested on each).
"""

import contextlib

from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import StatelessScope

from kerasllm.utils import backend_arrays

_REGISTRY = "uninitialized_variables"


@contextlib.contextmanager
def uninitialized_variables():
    """Variables created inside have a shape and dtype but no value (and take no memory) until
    `initialize(variable, value)`.

    Nothing may read a variable's value inside the block (building layers is fine).
    """
    with StatelessScope(initialize_variables=False):
        yield


def is_initialized(variable):
    return getattr(variable, "_value", None) is not None


def initialize(variable, value=None):
    """Gives an uninitialized `variable` its value: `value` (array-like, cast to the variable's
    dtype by the backend; a NumPy array may become the variable's own memory, so do not reuse it) or,
    when `None`, the variable's own initializer."""
    if value is not None:
        value = backend_arrays.as_backend_tensor(value)
        variable._initializer = lambda shape, dtype=None: value
    variable._deferred_initialize()
    _forget([variable])


def discard(variables):
    """Drops variables that will never be initialized (a failed load) from Keras's registry, so a later
    `StatelessScope` does not try to initialize them."""
    _forget(variables)


def _forget(variables):
    registry = global_state.get_global_attribute(_REGISTRY)
    if registry:
        ids = {id(variable) for variable in variables}
        global_state.set_global_attribute(_REGISTRY, [v for v in registry if id(v) not in ids])
