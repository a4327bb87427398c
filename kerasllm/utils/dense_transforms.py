"""Changes what a float `keras.layers.Dense` computes while a callback trains it (QAT, pruning).

Quantization-aware training fake-quantizes a layer's kernel and inputs; pruning multiplies its kernel
by a mask. Both must act inside the compiled training step, both may act on the same layer at once
(pruned weights stay zero under QAT), and both must leave a plain layer behind. This module is the one
place that does it: a transform is a pair of functions `kernel_fn(kernel) -> kernel` and
`input_fn(inputs) -> inputs` registered on a layer under a key; while any are registered the layer's
`call` (replaced on the instance only, like Keras's own `enable_lora` adds state to a built layer)
computes `activation(input_fns(inputs) @ kernel_fns(layer.kernel) + bias)`, applying kernel functions
in increasing `priority` (pruning before quantization). Removing the last transform restores the
layer's own `call`; the layer's variables and config never change, so saving is unaffected.
"""

import keras
from keras import ops

_ATTRIBUTE = "_kerasllm_transforms"


def check_transformable(layer):
    """Raises a `ValueError` unless `layer` is a built, float (not yet quantized) `Dense` layer."""
    if not isinstance(layer, keras.layers.Dense):
        raise ValueError(
            f"Layer {layer.name!r} is a {type(layer).__name__}; only keras.layers.Dense layers can be "
            "fake-quantized or pruned."
        )
    if not layer.built:
        raise ValueError(f"Layer {layer.name!r} is not built: call the model on a batch first.")
    if layer.quantization_mode is not None:
        raise ValueError(
            f"Layer {layer.name!r} is already quantized ({layer.quantization_mode!r}); train and prune "
            "the float model, then convert it once."
        )


def add_transform(layer, key, kernel_fn=None, input_fn=None, priority=0):
    """Registers `kernel_fn` / `input_fn` on `layer` under `key` (replacing an earlier one).

    Args:
        layer: built float `keras.layers.Dense`.
        key: str. Name of the transform, e.g. `"pruning"` or `"qat"`.
        kernel_fn: callable `kernel -> kernel` or `None`.
        input_fn: callable `inputs -> inputs` or `None`.
        priority: int. Kernel and input functions run in increasing priority. Defaults to `0`.
    """
    check_transformable(layer)
    registered = layer.__dict__.get(_ATTRIBUTE)
    if registered is None:
        registered = {}
        # Layer.__setattr__ would track the dict as state: bypass it, this is not a weight.
        object.__setattr__(layer, _ATTRIBUTE, registered)
        object.__setattr__(layer, "_kerasllm_had_own_call", "call" in layer.__dict__)
        object.__setattr__(layer, "_kerasllm_original_call", layer.call)
        object.__setattr__(layer, "call", _transformed_call(layer))
    registered[key] = (priority, kernel_fn, input_fn)


def remove_transform(layer, key):
    """Removes the transform `key` from `layer` (no-op if absent); the last one restores `call`."""
    registered = layer.__dict__.get(_ATTRIBUTE)
    if not registered or key not in registered:
        return
    del registered[key]
    if registered:
        return
    if layer.__dict__["_kerasllm_had_own_call"]:
        object.__setattr__(layer, "call", layer.__dict__["_kerasllm_original_call"])
    else:
        object.__delattr__(layer, "call")
    for name in (_ATTRIBUTE, "_kerasllm_had_own_call", "_kerasllm_original_call"):
        object.__delattr__(layer, name)


def has_transform(layer, key):
    """Whether `layer` has the transform `key` registered."""
    return key in (layer.__dict__.get(_ATTRIBUTE) or {})


def transformed_kernel(layer):
    """The kernel `layer` computes with now: its own kernel through every registered kernel function."""
    kernel = layer.kernel
    for _, kernel_fn, _ in _ordered(layer):
        if kernel_fn is not None:
            kernel = kernel_fn(kernel)
    return kernel


def _ordered(layer):
    registered = layer.__dict__.get(_ATTRIBUTE) or {}
    return sorted(registered.values(), key=lambda entry: entry[0])


def _transformed_call(layer):
    def call(inputs, training=None):
        x = inputs
        for _, _, input_fn in _ordered(layer):
            if input_fn is not None:
                x = input_fn(x)
        x = ops.matmul(x, transformed_kernel(layer))
        if layer.bias is not None:
            x = ops.add(x, layer.bias)
        if layer.activation is not None:
            x = layer.activation(x)
        return x

    return call


def has_input_transform(layer):
    """Whether a registered transform changes `layer`'s inputs (quantization-aware training's
    activation fake-quantization does): then no plain kernel computes what the layer computes."""
    return any(input_fn is not None for _, _, input_fn in _ordered(layer))
