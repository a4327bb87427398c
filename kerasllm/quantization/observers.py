"""Where a `Dense` layer keeps the observer of its input range, and how observers are made by name.

Quantization-aware training with static activation ranges gives each fake-quantized `Dense` an
observer (`kerasllm.quantization.MinMaxObserver` or `MovingAverageMinMaxObserver`) attached as the
sublayer `input_observer`, as pruning attaches its `PruningMask`: its variables are model state that
the compiled step updates on every backend and that `model.save_weights` (so
`kerasllm.callbacks.Checkpoint`) saves, under `<layer path>/input_observer/...`. The layer's own
variables and config are untouched. `detach_observer` removes it before conversion (Keras quantizes
leaf `Dense` layers only).
"""

import contextlib

import keras

from kerasllm.quantization.min_max_observer import MinMaxObserver
from kerasllm.quantization.moving_average_min_max_observer import MovingAverageMinMaxObserver

OBSERVERS = ("moving_average_minmax", "minmax")
OBSERVER_ATTRIBUTE = "input_observer"


def check_observer_name(name):
    """Raises a `ValueError` unless `name` is one of `OBSERVERS`."""
    if name not in OBSERVERS:
        raise ValueError(
            f"Unknown observer {name!r}; use one of {OBSERVERS} (a moving average of each batch's "
            "min/max, or the running min/max over all batches)."
        )


def make_observer(kind, momentum=0.99, **kwargs):
    """A new observer of `kind` `"moving_average_minmax"` or `"minmax"`; `kwargs` go to the layer."""
    check_observer_name(kind)
    if kind == "minmax":
        return MinMaxObserver(**kwargs)
    return MovingAverageMinMaxObserver(momentum=momentum, **kwargs)


def get_observer(layer):
    """The observer attached to `layer`, or `None`."""
    # `getattr`, not `__dict__`: on torch a sublayer lives in the module's `_modules`.
    observer = getattr(layer, OBSERVER_ATTRIBUTE, None)
    return observer if isinstance(observer, MinMaxObserver) else None


def attach_observer(layer, kind, momentum=0.99):
    """Gives `layer` an observer of its inputs (if it has none) and returns it."""
    observer = get_observer(layer)
    if observer is not None:
        return observer
    with contextlib.ExitStack() as scopes:
        # Variable paths are API: `<layer path>/input_observer/min_value`.
        for part in layer.path.split("/"):
            scopes.enter_context(keras.name_scope(part))
        observer = make_observer(kind, momentum=momentum, name=OBSERVER_ATTRIBUTE)
    layer._tracker.unlock()
    try:
        setattr(layer, OBSERVER_ATTRIBUTE, observer)
    finally:
        layer._tracker.lock()
    return observer


def detach_observer(layer):
    """Removes `layer`'s observer (no-op if none)."""
    observer = get_observer(layer)
    if observer is None:
        return
    layer._tracker.unlock()
    try:
        if observer in layer._layers:
            layer._layers.remove(observer)
        delattr(layer, OBSERVER_ATTRIBUTE)
    finally:
        layer._tracker.lock()
