"""Saves GPTQ / AWQ layers with the variables Keras's loader reads back.

Keras 3.15's `Dense.save_own_variables` and `EinsumDense.save_own_variables` leave out `kernel_zero`
of a GPTQ or AWQ layer (they take the zero point from `_get_kernel_with_merged_lora`, which returns
none for those modes), while `load_own_variables` expects it. A GPTQ-quantized model therefore
saved to a `.keras` file that `keras.saving.load_model` refused ("Layer 'query' expected 5
variables, but received 0 variables during loading").

`keep_zero_points(model)` gives each GPTQ / AWQ layer of `model` a `save_own_variables` (on the
instance only, as `dense_transforms` replaces `call`) that writes every variable of the mode's
`variable_serialization_spec`, in that order, with the same skips as Keras's loader: exactly what
`load_own_variables` reads. Nothing else about the layer changes, and a file saved this way loads with
Keras's own loader. `kerasllm.quantization.quantize` calls it after GPTQ, and kerasllm models
after being rebuilt from a saved config, so a reloaded GPTQ model saves again.
"""

import types

_MODES = ("gptq", "awq")


def _save_own_variables(layer, store):
    if layer.quantization_mode not in _MODES:  # e.g. the layer was replaced or re-quantized since
        return type(layer).save_own_variables(layer, store)
    if not layer.built:
        return
    index = 0
    for name in layer.variable_serialization_spec[layer.quantization_mode]:
        if name == "bias" and layer.bias is None:
            continue
        if name in ("kernel_zero", "g_idx") and not hasattr(layer, name):
            continue
        store[str(index)] = getattr(layer, name)
        index += 1


def keep_zero_points(model):
    """Makes every GPTQ / AWQ layer of `model` save the variables its loader expects. Idempotent."""
    for layer in model._flatten_layers(include_self=True):
        if getattr(layer, "quantization_mode", None) not in _MODES or "save_own_variables" in layer.__dict__:
            continue
        if "kernel_zero" in layer.variable_serialization_spec.get(layer.quantization_mode, ()):
            # Layer.__setattr__ would track the method as state: bypass it, it is not a weight.
            object.__setattr__(layer, "save_own_variables", types.MethodType(_save_own_variables, layer))
