"""Magnitude pruning: the masks, the sparsity schedule, and where a pruned `Dense` keeps its mask.

The numerics are host-side numpy (masks change every few hundred steps, not inside the compiled step):
`magnitude_mask` (unstructured) and `two_four_mask` (2:4 structured) compute a mask from a kernel,
`polynomial_sparsity` is the schedule of Zhu & Gupta (2017), as `tfmot`'s `PolynomialDecay`.

A pruned layer holds its mask in a `PruningMask` sublayer attached to it as `pruning_mask`: a
non-trainable variable, so the mask is model state that the compiled step reads on every backend and
that `model.save_weights` (and so `kerasllm.callbacks.Checkpoint`) saves and restores; the layer's own
variables and config are untouched (`keras.layers.Dense` saves only its kernel and bias). The forward
pass multiplies the kernel by the mask through `kerasllm.utils.dense_transforms` (priority 0, so
quantization-aware training, priority 10, sees the pruned kernel). `detach_mask` removes both.

References:
    - [Zhu & Gupta, 2017](https://arxiv.org/abs/1710.01878)
    - [Mishra et al., 2021 (2:4 sparsity)](https://arxiv.org/abs/2104.08378)
"""

import contextlib
import re

import keras
import numpy as np
from keras import ops

from kerasllm.utils import dense_transforms

STRUCTURES = ("unstructured", "2:4")
SCHEDULES = ("polynomial", "constant")
TRANSFORM_KEY = "pruning"
MASK_ATTRIBUTE = "pruning_mask"


def validate_sparsity(value, name="target_sparsity"):
    """Raises a `ValueError` unless `value` is a number in `[0, 1)`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 <= value < 1:
        raise ValueError(
            f"`{name}` must be a number in [0, 1) (the share of weights set to zero), but got {value!r}; "
            "e.g. 0.5 prunes half of each layer's weights."
        )


def polynomial_sparsity(step, initial_sparsity, target_sparsity, begin_step, end_step, power=3):
    """Sparsity at `step` of the polynomial schedule (Zhu & Gupta, 2017; `tfmot`'s `PolynomialDecay`).

    `target + (initial - target) * (1 - (step - begin) / (end - begin)) ** power`, with `step` clipped
    to `[begin_step, end_step]`: `initial_sparsity` at `begin_step`, `target_sparsity` from `end_step`.

    Args:
        step: int. Training step.
        initial_sparsity: float. Sparsity at `begin_step`.
        target_sparsity: float. Sparsity at and after `end_step`.
        begin_step: int. First step of the schedule.
        end_step: int. Step at which `target_sparsity` is reached.
        power: float. Exponent of the decay. Defaults to `3`.

    Returns:
        float. The sparsity.
    """
    if end_step <= begin_step:
        return float(target_sparsity) if step >= begin_step else float(initial_sparsity)
    progress = (min(max(step, begin_step), end_step) - begin_step) / (end_step - begin_step)
    return float(target_sparsity + (initial_sparsity - target_sparsity) * (1.0 - progress) ** power)


def magnitude_mask(kernel, sparsity):
    """Unstructured magnitude mask: zeros for the `round(sparsity * size)` smallest `|kernel|` entries.

    Ties are broken deterministically: among equal magnitudes the entry with the lower flat (row-major)
    index is pruned first. Entries that are already zero are therefore pruned first, so masks only grow
    sparser as the schedule raises the sparsity.

    Args:
        kernel: array. The weights.
        sparsity: float in `[0, 1)`. Share of entries to prune.

    Returns:
        float32 numpy array of `kernel`'s shape, `0` where pruned and `1` elsewhere.
    """
    magnitudes = np.abs(np.asarray(kernel, dtype="float32")).reshape(-1)
    pruned = int(round(float(sparsity) * magnitudes.size))
    mask = np.ones(magnitudes.size, dtype="float32")
    mask[np.argsort(magnitudes, kind="stable")[:pruned]] = 0.0
    return mask.reshape(np.shape(kernel))


def two_four_mask(kernel):
    """2:4 structured mask of a `(in, out)` kernel: in every 4 consecutive inputs, keeps the 2 largest.

    Groups run along the input dimension (axis 0), separately for each output column: the pattern
    sparse tensor cores accelerate. Among equal magnitudes the lower input index is kept.

    Args:
        kernel: array `(in, out)` with `in` a multiple of 4.

    Returns:
        float32 numpy array `(in, out)` with exactly two ones in each group of four.
    """
    kernel = np.asarray(kernel, dtype="float32")
    inputs, outputs = kernel.shape
    groups = np.abs(kernel).reshape(inputs // 4, 4, outputs)  # (G, 4, out)
    order = np.argsort(-groups, axis=1, kind="stable")  # largest first, lower index first on ties
    mask = np.zeros_like(groups)
    np.put_along_axis(mask, order[:, :2], 1.0, axis=1)
    return mask.reshape(inputs, outputs)


def compute_mask(kernel, sparsity, structure):
    """The mask of `kernel` for `structure` (`"unstructured"` at `sparsity`, or `"2:4"`)."""
    if structure == "2:4":
        return two_four_mask(kernel)
    return magnitude_mask(kernel, sparsity)


def prunable_layers(model, layers=None):
    """The `Dense` layers to prune: those inside kerasllm attention / feed-forward, or matching `layers`.

    Args:
        model: a built Keras model.
        layers: `None`, or a regular expression or list of them, matched (`re.search`) against each
            `keras.layers.Dense`'s `path`, e.g. `"attention/(query|value)"`.

    Returns:
        list of `keras.layers.Dense`, in the model's layer order.
    """
    from kerasllm.layers.feed_forward import FeedForward
    from kerasllm.layers.self_attention import SelfAttention

    found = []
    if layers is None:
        for layer in model._flatten_layers(include_self=True):
            if isinstance(layer, (SelfAttention, FeedForward)):
                found.extend(
                    sub for sub in layer._flatten_layers(include_self=False)
                    if isinstance(sub, keras.layers.Dense) and not isinstance(sub, PruningMask)
                )
    else:
        patterns = [layers] if isinstance(layers, str) else list(layers)
        for layer in model._flatten_layers(include_self=True):
            if isinstance(layer, keras.layers.Dense) and any(re.search(p, layer.path) for p in patterns):
                found.append(layer)
    unique = []
    for layer in found:
        if all(layer is not other for other in unique):
            unique.append(layer)
    return sorted(unique, key=lambda layer: layer.path)


@keras.saving.register_keras_serializable(package="kerasllm")
class PruningMask(keras.layers.Layer):
    """Holds the pruning mask of one `Dense` kernel as a non-trainable variable (model state).

    Attached to a pruned layer by `kerasllm.callbacks.Pruning`; not used directly.

    Args:
        shape: tuple. The kernel's shape.
        **kwargs: standard layer arguments.
    """

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.shape = tuple(shape)
        self.mask = self.add_weight(
            shape=self.shape, initializer="ones", trainable=False, name="mask", dtype="float32"
        )

    def call(self, kernel):
        return self.mask_kernel(kernel)

    def mask_kernel(self, kernel):
        """`kernel * mask`, in `kernel`'s dtype (a plain function: no layer-call casting)."""
        return ops.multiply(kernel, ops.cast(self.mask, kernel.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"shape": list(self.shape)})
        return config


def get_mask_holder(layer):
    """The `PruningMask` attached to `layer`, or `None`."""
    # `getattr`, not `__dict__`: on torch a sublayer lives in the module's `_modules`.
    holder = getattr(layer, MASK_ATTRIBUTE, None)
    return holder if isinstance(holder, PruningMask) else None


def attach_mask(layer):
    """Gives `layer` a `PruningMask` (all ones) and masks its kernel in the forward pass; idempotent."""
    dense_transforms.check_transformable(layer)
    holder = get_mask_holder(layer)
    if holder is None:
        with contextlib.ExitStack() as scopes:
            # Variable paths are API: the mask's path is `<layer path>/pruning_mask/mask`.
            for part in layer.path.split("/"):
                scopes.enter_context(keras.name_scope(part))
            holder = PruningMask(tuple(layer.kernel.shape), name=MASK_ATTRIBUTE)
        layer._tracker.unlock()
        try:
            setattr(layer, MASK_ATTRIBUTE, holder)
        finally:
            layer._tracker.lock()
    dense_transforms.add_transform(layer, TRANSFORM_KEY, kernel_fn=holder.mask_kernel, priority=0)
    return holder


def detach_mask(layer, apply=True):
    """Removes `layer`'s mask (after writing `kernel * mask` into the kernel when `apply`); no-op if none.

    A layer converted to a quantized one in the meantime (quantization-aware training) only loses the
    mask: its kernel was zeroed where pruned before the conversion.
    """
    holder = get_mask_holder(layer)
    dense_transforms.remove_transform(layer, TRANSFORM_KEY)
    if holder is None:
        return
    if apply and layer.quantization_mode is None:
        apply_mask(layer)
    layer._tracker.unlock()
    try:
        if holder in layer._layers:
            layer._layers.remove(holder)
        delattr(layer, MASK_ATTRIBUTE)
    finally:
        layer._tracker.lock()


def apply_mask(layer):
    """Writes `kernel * mask` into `layer.kernel`, so pruned weights are exactly zero in the variable."""
    holder = get_mask_holder(layer)
    if holder is not None:
        layer.kernel.assign(ops.multiply(layer.kernel, ops.cast(holder.mask, layer.kernel.dtype)))
