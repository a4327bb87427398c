import keras

from kerasllm.quantization.pruning import detach_mask, get_mask_holder


def strip_pruning(model):
    """Removes every pruning mask from `model`, leaving a plain model whose pruned weights are exactly 0.

    Each pruned `Dense` gets `kernel * mask` written into its kernel, then loses its mask variable and
    its masked forward pass; the model's variables, config and saved files are then those of an
    unpruned model (`model.save("model.keras")` reloads with plain Keras). The model is changed in
    place. `kerasllm.callbacks.Pruning` calls this at the end of training unless
    `strip_on_train_end=False`. A model without masks is returned unchanged.

    Args:
        model: a Keras model pruned by `kerasllm.callbacks.Pruning`.

    Returns:
        The same `model`.

    Example:

    >>> pruning = kerasllm.callbacks.Pruning(target_sparsity=0.5, strip_on_train_end=False)
    >>> model.fit(train, epochs=1, callbacks=[pruning])
    >>> model = kerasllm.quantization.strip_pruning(model)
    >>> model.save("pruned.keras")
    """
    stripped = False
    for layer in model._flatten_layers(include_self=True):
        if isinstance(layer, keras.layers.Dense) and get_mask_holder(layer) is not None:
            detach_mask(layer, apply=True)
            stripped = True
    if stripped:
        reset_compiled_functions(model)
    return model


def reset_compiled_functions(model):
    """Drops `model`'s traced train/test/predict functions so the next call traces the current layers."""
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)
