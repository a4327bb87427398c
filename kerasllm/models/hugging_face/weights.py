"""Weight maps between Hugging Face tensors and kerasllm variables, in both directions.

A family converter lists `Weight` entries: the tensor's Hugging Face name, the kerasllm layer(s) and
attribute(s) it fills, and how the layouts differ. Loading reads each tensor once and hands it to its
uninitialized variable; export reads what each layer computes with (LoRA merged, pruning masks
applied, low-rank factors multiplied) and writes the tensor back in Hugging Face's layout.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from kerasllm.layers.low_rank_dense import LowRankDense
from kerasllm.utils import dense_transforms

LAYOUTS = ("copy", "linear", "split")


@dataclasses.dataclass(frozen=True)
class Weight:
    """One Hugging Face tensor and the kerasllm variable(s) it maps to.

    Attributes:
        name: str. The tensor's name. Names of the base model (`layers.0.mlp.up_proj.weight`) get the
            checkpoint's base prefix (`model.`, `transformer.`, `bert.` or none) when `head` is false;
            head tensors (`lm_head.weight`) are absolute.
        targets: tuple of `(layer_path, attribute)`. The kerasllm layers (paths from the model, e.g.
            `"backbone/block_0/attention/query"`, `""` for the model itself) and their variable
            attributes (`"kernel"`, `"bias"`, `"embeddings"`, `"scale"`, `"gamma"`, `"beta"`, ...).
        layout: str. `"copy"` (same layout), `"linear"` (a torch `Linear` weight `(out, in)`, the
            transpose of a Keras kernel) or `"split"` (one tensor whose last axis is the concatenation
            of the targets', as GPT-2's fused `c_attn`).
        head: bool. Whether `name` is absolute (task heads) rather than under the base prefix.
        optional: bool. A tensor the checkpoint may lack (a classifier head or pooler a fine-tuning
            run starts fresh); its variables then keep their initializer.
    """

    name: str
    targets: tuple
    layout: str = "copy"
    head: bool = False
    optional: bool = False

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"Unknown layout {self.layout!r}; use one of {LAYOUTS}.")
        if (self.layout == "split") != (len(self.targets) > 1):
            raise ValueError(f"{self.name}: only the 'split' layout maps to several targets.")


def linear(name, path, bias=False, head=False, optional=False):
    """Entries for a torch `Linear` (weight and optional bias) that is a Keras `Dense` at `path`."""
    entries = [Weight(f"{name}.weight", ((path, "kernel"),), "linear", head, optional)]
    if bias:
        entries.append(Weight(f"{name}.bias", ((path, "bias"),), "copy", head, optional))
    return entries


def norm(name, path, kind, head=False):
    """Entries for a norm: LayerNorm (weight and bias) or an RMS norm (weight only)."""
    if kind == "layernorm":
        return [Weight(f"{name}.weight", ((path, "gamma"),), head=head), Weight(f"{name}.bias", ((path, "beta"),), head=head)]
    return [Weight(f"{name}.weight", ((path, "scale"),), head=head)]


def layers_by_path(model):
    """`{path: layer}` for the model (`""`) and every sublayer, paths joined by `/` from the model
    down (`"backbone/block_0/attention/query"`), whatever the model's own name."""
    found = {"": model}

    def walk(layer, prefix):
        for child in layer._flatten_layers(include_self=False, recursive=False):
            path = f"{prefix}{child.name}"
            found[path] = child
            walk(child, path + "/")

    walk(model, "")
    return found


def target_variable(layers, path, attribute):
    """The variable behind `(path, attribute)` of a freshly built model."""
    layer = layers.get(path)
    if layer is None:
        raise KeyError(f"kerasllm model has no layer {path!r}")
    if isinstance(layer, keras.layers.Dense) and attribute == "kernel":
        return layer._kernel
    variable = getattr(layer, attribute, None)
    if not isinstance(variable, keras.Variable):
        raise KeyError(f"layer {path!r} has no variable {attribute!r}")
    return variable


def to_keras(array, layout, shapes, dtype=None):
    """The value(s) for the targets of one Hugging Face tensor (a list, one per target), in `dtype`
    (default: the tensor's), each made in one pass over the data."""
    dtype = np.dtype(dtype or array.dtype)
    if layout == "copy":
        return [array.astype(dtype, copy=False)]
    if layout == "linear":
        return [transpose(array, dtype)]
    sizes = np.cumsum([shape[-1] for shape in shapes])[:-1]
    return [np.ascontiguousarray(part, dtype=dtype) for part in np.split(array, sizes, axis=-1)]


def to_hugging_face(values, layout):
    """One Hugging Face tensor from the values of its targets."""
    if layout == "copy":
        return values[0]
    if layout == "linear":
        return transpose(values[0])
    return np.concatenate(values, axis=-1)


def transpose(matrix, dtype=None):
    """`matrix.T` as a new C-ordered array (cast to `dtype` on the way), copied in row blocks: 3-5x
    faster than `np.ascontiguousarray(matrix.T)` on large weights, whose column walk misses the cache."""
    out = np.empty(matrix.shape[::-1], dtype=dtype or matrix.dtype)
    for start in range(0, matrix.shape[0], _TRANSPOSE_BLOCK):
        out[:, start : start + _TRANSPOSE_BLOCK] = matrix[start : start + _TRANSPOSE_BLOCK].T
    return out


_TRANSPOSE_BLOCK = 256


def hugging_face_shape(shapes, layout):
    """The shape the Hugging Face tensor must have, from its targets' Keras shapes."""
    if layout == "copy":
        return tuple(shapes[0])
    if layout == "linear":
        return tuple(reversed(shapes[0]))
    return tuple(shapes[0][:-1]) + (sum(shape[-1] for shape in shapes),)


def computed_value(layers, path, attribute):
    """What `(path, attribute)` computes with, as a NumPy array: LoRA adapters merged, pruning masks
    applied, low-rank factors multiplied back. Raises for layers no plain weight can stand for."""
    layer = layers.get(path)
    if isinstance(layer, LowRankDense):
        if attribute == "kernel":
            return computed_value(layers, f"{path}/down", "kernel") @ computed_value(layers, f"{path}/up", "kernel")
        return computed_value(layers, f"{path}/up", attribute)
    if isinstance(layer, keras.layers.Dense):
        if layer.quantization_mode is not None:
            raise ValueError(
                f"Layer {path!r} is quantized ({layer.quantization_mode}): Keras's quantized layers also quantize "
                "their inputs, which a transformers checkpoint cannot express, so exporting would change what the "
                "model computes. Export the float model (before `quantize`), or use a quantized export format."
            )
        if dense_transforms.has_input_transform(layer):
            raise ValueError(
                f"Layer {path!r} is in quantization-aware training (its inputs are fake-quantized): finish "
                "training so the callback converts it, or export the float model before QAT."
            )
        if attribute == "kernel":
            return _numpy(dense_transforms.transformed_kernel(layer))
    return _numpy(getattr(layer, attribute))


def _numpy(value):
    value = ops.convert_to_numpy(value)
    return np.asarray(value)
