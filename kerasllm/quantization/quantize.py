"""Post-training quantization and conversion of (QAT-trained) models to Keras-native quantized layers.

Both functions end in `model.quantize(...)` restricted to exactly the chosen `Dense` layers, so the
result is a plain Keras model whose variables are int8 (or int4 packed two to an int8 byte) and that
`model.save()` writes and `keras.saving.load_model()` reads on every backend. Every check runs before
the first layer changes: on a `ValueError` the model is untouched.
"""

import keras
import numpy as np

from kerasllm.quantization import calibrated_saving
from kerasllm.utils import dense_transforms
from kerasllm.quantization import gptq as gptq_lib
from kerasllm.quantization.fake_quant import check_group_size
from kerasllm.utils.collection import collect_once
from kerasllm.utils.validation import validate_token_ids

MODES = ("int8", "int4")
PTQ_MODES = ("int8", "int4", "gptq")
QAT_KEY = "qat"
# Set on a layer (outside Keras's tracking) by the QAT callback: `(mode, group_size)` it trains for.
SPEC_ATTRIBUTE = "_kerasllm_qat_spec"


def quantize(
    model,
    mode,
    calibration_data=None,
    tokenizer=None,
    group_size=128,
    layers=None,
    quantize_head=False,
    num_samples=128,
    sequence_length=None,
):
    """Post-training quantization of a kerasllm model through Keras: `"int8"`, `"int4"` or `"gptq"`.

    `"int8"` quantizes the kernels of the attention and feed-forward `Dense` layers per output
    channel and their inputs per token at run time; `"int4"` quantizes those kernels to 4 bits in
    groups of `group_size` input rows (weights only, inputs stay float); `"gptq"` runs GPTQ into
    Keras's `gptq` layers (4-bit weights, error-corrected block by block with Hessians of
    `calibration_data`; `kerasllm.quantization.gptq` says why it does not call Keras 3.15's own).
    Embeddings, norms and (unless `quantize_head`) the output head stay float.

    Args:
        model: a built kerasllm model (e.g. `kerasllm.models.CausalLM`) or any built Keras model
            when `layers` names its `Dense` layers.
        mode: str. `"int8"`, `"int4"` or `"gptq"`.
        calibration_data: for `"gptq"` only: a list of strings (needs `tokenizer`) or of token id
            arrays. Defaults to `None`.
        tokenizer: a `kerasllm.tokenizers.Tokenizer` for string `calibration_data`. Defaults to `None`.
        group_size: int or None. Input rows sharing one int4 / GPTQ scale; `None` for one scale per
            output channel. Must divide every chosen layer's input width. Ignored for `"int8"`.
            Defaults to `128`.
        layers: `None` (attention and feed-forward `Dense` layers of kerasllm blocks), a list of
            substrings matched against layer paths, or a predicate `layer -> bool` over `Dense`
            layers. Defaults to `None`.
        quantize_head: bool. Also quantize an untied `lm_head` (not with `"gptq"`). Defaults to
            `False`.
        num_samples: int. GPTQ calibration windows. Defaults to `128`.
        sequence_length: int. GPTQ window length. Defaults to the model's `max_sequence_length`
            (capped at 512).

    Returns:
        The list of `Dense` layers that were quantized (the model is changed in place).

    Example:

    >>> model = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=2048)
    >>> quantized = kerasllm.quantization.quantize(model, "int8")
    >>> model.save("model-int8.keras")
    """
    if mode not in PTQ_MODES:
        raise ValueError(f"Unknown quantization mode {mode!r}; use one of {PTQ_MODES}.")
    if mode in MODES:
        if calibration_data is not None:
            raise ValueError(
                f"mode={mode!r} needs no calibration data (Keras quantizes its inputs at run time); "
                "drop `calibration_data`, or use mode='gptq'."
            )
        return convert(model, mode, group_size=group_size, layers=layers, quantize_head=quantize_head)
    return _gptq(model, calibration_data, tokenizer, group_size, layers, quantize_head, num_samples, sequence_length)


def convert(model, mode, group_size=128, layers=None, quantize_head=False):
    """Removes quantization-aware-training transforms and converts the layers to Keras int8 / int4.

    If the model carries the fake quantization of `kerasllm.callbacks.QuantizationAwareTraining`,
    exactly those layers are converted, with the mode and group size they were trained for; the
    converted model then computes what the QAT forward pass computed. Kernel transforms of lower
    priority still on those layers (e.g. pruning masks) are baked into the kernels first. Without QAT
    transforms, the layers chosen by `layers` / `quantize_head` are quantized (post-training).
    A built optimizer is replaced by a fresh one (same config, new state): its moments belonged to the
    float kernels, and saving them would make the quantized file larger than the float weights.

    Args:
        model: a built Keras model.
        mode: str. `"int8"` or `"int4"`.
        group_size: int or None. int4 group size along the input axis (Keras's
            `Int4QuantizationConfig(block_size=...)`); `None` for one scale per output channel.
            Defaults to `128`.
        layers: `None`, a list of path substrings, or a predicate (see `quantize`). Defaults to `None`.
        quantize_head: bool. Also convert an untied `lm_head`. Defaults to `False`.

    Returns:
        The list of converted `Dense` layers.

    Example:

    >>> model.fit(train, callbacks=[kerasllm.callbacks.QuantizationAwareTraining(
    ...     "int8", convert_on_train_end=False)])
    >>> kerasllm.quantization.convert(model, "int8")
    """
    if mode not in MODES:
        raise ValueError(f"Unknown quantization mode {mode!r} for convert; use one of {MODES}.")
    check_group_size(group_size)
    qat_layers = [layer for layer in _dense_layers(model) if dense_transforms.has_transform(layer, QAT_KEY)]
    if qat_layers:
        for layer in qat_layers:
            trained_mode, trained_group_size = getattr(layer, SPEC_ATTRIBUTE, (mode, group_size))
            if trained_mode != mode or (mode == "int4" and _norm(trained_group_size) != _norm(group_size)):
                raise ValueError(
                    f"Layer {layer.path!r} was trained with mode={trained_mode!r}, "
                    f"group_size={trained_group_size!r} fake quantization; convert it with the same "
                    f"settings (convert(model, {trained_mode!r}, group_size={trained_group_size!r}))."
                )
        selected = qat_layers
    else:
        selected = select_layers(model, layers=layers, quantize_head=quantize_head)
    check_convertible(selected, mode, group_size)
    for layer in selected:
        _bake_transforms(layer)
    _keras_quantize(model, selected, mode, _keras_config(mode, group_size))
    return selected


def select_layers(model, layers=None, quantize_head=False):
    """The `Dense` layers QAT and PTQ act on, in model order.

    Args:
        model: a built Keras model.
        layers: `None` (every `Dense` inside a `kerasllm.layers.SelfAttention` or
            `kerasllm.layers.FeedForward`), a list of substrings matched against `layer.path`, or a
            predicate `layer -> bool` over the model's `Dense` layers. Defaults to `None`.
        quantize_head: bool. Add the model's untied `lm_head`. Defaults to `False`.

    Returns:
        A list of `keras.layers.Dense`. Raises a `ValueError` if it is empty.
    """
    from kerasllm.layers.feed_forward import FeedForward
    from kerasllm.layers.self_attention import SelfAttention

    if layers is None:
        selected = []
        for layer in model._flatten_layers(include_self=False):
            if isinstance(layer, (SelfAttention, FeedForward)):
                selected.extend(
                    sub for sub in layer._flatten_layers(include_self=False) if isinstance(sub, keras.layers.Dense)
                )
    elif callable(layers):
        selected = [layer for layer in _dense_layers(model) if layers(layer)]
    elif isinstance(layers, (list, tuple)) and layers and all(isinstance(s, str) for s in layers):
        selected = [layer for layer in _dense_layers(model) if any(s in layer.path for s in layers)]
    else:
        raise ValueError(
            f"`layers` must be None, a non-empty list of layer-path substrings or a predicate "
            f"`layer -> bool`; got {layers!r:.80}."
        )
    if quantize_head:
        head = getattr(model, "lm_head", None)
        if head is None:
            raise ValueError(
                "quantize_head=True, but the model has no separate output head (its head is tied to the "
                "token embedding, or it has none); build it with tie_word_embeddings=False, or leave "
                "quantize_head=False."
            )
        selected.append(head)
    unique = list({id(layer): layer for layer in selected}.values())
    if not unique:
        raise ValueError(
            f"No quantizable Dense layers found in {type(model).__name__} {model.name!r}: expected the "
            "attention / feed-forward Dense layers of a kerasllm model. Pass `layers=` (path substrings "
            "or a predicate) to choose Dense layers of another model."
        )
    return unique


def check_convertible(layers, mode, group_size):
    """Raises a `ValueError` naming the first layer that cannot be converted to `mode`."""
    from kerasllm.quantization.pruning import get_mask_holder

    for layer in layers:
        if type(layer) is not keras.layers.Dense:
            raise ValueError(
                f"Layer {layer.path!r} is a {type(layer).__name__}; Keras quantizes exactly "
                "keras.layers.Dense (not subclasses). Leave it out with `layers=`."
            )
        if layer.quantization_mode is not None:
            raise ValueError(
                f"Layer {layer.path!r} is already quantized ({layer.quantization_mode!r}): the model was "
                "converted before. Convert a float model once (reload the float model to convert again)."
            )
        if not layer.built:
            raise ValueError(f"Layer {layer.path!r} is not built: call the model on a batch first.")
        sublayers = [sub for sub in layer._flatten_layers(include_self=False) if sub is not get_mask_holder(layer)]
        if sublayers:
            raise ValueError(
                f"Layer {layer.path!r} has sublayers ({sublayers[0].name!r}); Keras quantizes only leaf "
                "Dense layers. Remove them before converting."
            )
        if mode == "int4":
            check_group_size(group_size, int(layer.kernel.shape[0]), layer.path)
        registered = layer.__dict__.get(dense_transforms._ATTRIBUTE) or {}
        for key, (_, _, input_fn) in registered.items():
            if key != QAT_KEY and input_fn is not None:
                raise ValueError(
                    f"Layer {layer.path!r} has an input transform {key!r} that cannot be folded into "
                    "its weights; remove it before converting."
                )


def _bake_transforms(layer):
    """Drops the QAT transform and folds any remaining kernel transforms (pruning) into the kernel."""
    from kerasllm.quantization.pruning import detach_mask

    dense_transforms.remove_transform(layer, QAT_KEY)
    if layer.__dict__.get(SPEC_ATTRIBUTE) is not None:
        object.__delattr__(layer, SPEC_ATTRIBUTE)
    # A pruning mask is a sublayer, and Keras quantizes leaf layers only: write `kernel * mask` into
    # the kernel and drop the mask, as `strip_pruning` does (a later strip then finds nothing).
    detach_mask(layer, apply=True)
    registered = layer.__dict__.get(dense_transforms._ATTRIBUTE)
    if not registered:
        return
    kernel = keras.ops.convert_to_numpy(dense_transforms.transformed_kernel(layer))
    for key in list(registered):
        dense_transforms.remove_transform(layer, key)
    layer.kernel.assign(kernel)


def _keras_quantize(model, layers, mode, config):
    chosen = {id(layer) for layer in layers}
    with collect_once():  # Keras collects garbage once per deleted float kernel otherwise
        model.quantize(mode, config=config, filters=lambda layer: id(layer) in chosen)
    missed = [layer.path for layer in layers if layer.quantization_mode != mode]
    if missed:  # pragma: no cover - guarded by check_convertible
        raise RuntimeError(f"Keras did not quantize {missed}.")
    _record_policies(model)
    _reset_optimizer(model)


def _reset_optimizer(model):
    """Replaces a built optimizer by a fresh one of the same config, built on the trainable variables.

    Its moments belonged to the float kernels, which are gone: kept, they would triple the size of the
    saved int8 model and no longer match `model.trainable_variables`.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not optimizer.built:
        return
    fresh = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    fresh.build(model.trainable_variables)
    model.optimizer = fresh


def _record_policies(model):
    """Makes the model's config rebuild its quantized sublayers as quantized layers.

    A kerasllm model creates its `Dense` layers in `__init__` from its config, as float layers; the
    quantized dtype policy of each lives only on the layer. As KerasHub backbones do, the model's own
    dtype becomes a `keras.dtype_policies.DTypePolicyMap` from layer path to quantized policy (default:
    the model's policy). kerasllm layers hand `dtype=self.dtype_policy` to their sublayers, so on
    `from_config` each sublayer finds its own policy by path, and `load_model` restores int8 / int4.
    """
    policy = model.dtype_policy
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
        policy_map = policy
    else:
        policy_map = keras.dtype_policies.DTypePolicyMap(default_policy=policy)
    for layer in model._flatten_layers(include_self=False):
        if layer.quantization_mode is not None and layer.path not in policy_map:
            policy_map[layer.path] = layer.dtype_policy
    # Layer.dtype_policy's setter would store one policy under the model's own path; set the map itself.
    model._dtype_policy = policy_map


def _keras_config(mode, group_size):
    if mode == "int8":
        return keras.quantizers.Int8QuantizationConfig()
    return keras.quantizers.Int4QuantizationConfig(block_size=_norm(group_size))


def _norm(group_size):
    return None if group_size in (None, -1) else group_size


def _dense_layers(model):
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, keras.layers.Dense)]


def _gptq(model, calibration_data, tokenizer, group_size, layers, quantize_head, num_samples, sequence_length):
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "blocks"):
        raise ValueError(
            "mode='gptq' needs a kerasllm model (a `backbone` with `blocks`) so GPTQ can run it "
            "block by block; for other models use mode='int4' (Keras 3.15.1's own "
            "model.quantize('gptq') does not calibrate: see kerasllm.quantization.gptq)."
        )
    if quantize_head:
        raise ValueError(
            "mode='gptq' quantizes the layers inside the Transformer blocks only; use quantize_head=False "
            "(or mode='int8' / 'int4' for the head)."
        )
    if calibration_data is None or isinstance(calibration_data, (str, bytes)) or not len(calibration_data):
        raise ValueError(
            "mode='gptq' needs `calibration_data`: a non-empty list of strings (with `tokenizer=`) or of "
            "token id arrays."
        )
    if isinstance(calibration_data[0], str) and tokenizer is None:
        raise ValueError("String calibration_data needs `tokenizer=` (the model's tokenizer).")
    check_group_size(group_size)
    selected = select_layers(model, layers=layers)
    in_blocks = {id(sub) for block in backbone.blocks for sub in block._flatten_layers()}
    outside = [layer.path for layer in selected if id(layer) not in in_blocks]
    if outside:
        raise ValueError(f"mode='gptq' can only quantize layers inside the blocks; {outside} are outside.")
    for layer in selected:
        if dense_transforms.has_transform(layer, QAT_KEY) or layer.__dict__.get(dense_transforms._ATTRIBUTE):
            raise ValueError(
                f"Layer {layer.path!r} carries QAT / pruning transforms; GPTQ needs a plain float model "
                "(use kerasllm.quantization.convert for a QAT-trained model)."
            )
    check_convertible(selected, "int4", group_size)

    windows = _calibration_windows(
        calibration_data, tokenizer, num_samples, sequence_length or min(int(model.max_sequence_length), 512)
    )
    validate_token_ids(windows, vocabulary_size=model.vocabulary_size, max_length=int(model.max_sequence_length),
                       name="GPTQ calibration_data")
    hidden = backbone.token_embedding(windows)  # (N, T, C)
    if backbone.position_embedding is not None:
        hidden = hidden + backbone.position_embedding(hidden, start_index=0)
    with collect_once():  # Keras collects garbage once per deleted float kernel otherwise
        gptq_lib.quantize_blocks(backbone.blocks, selected, keras.ops.convert_to_numpy(hidden),
                                 group_size=_norm(group_size))
    # What Model.quantize does after changing layers: new step functions, torch's variables retracked.
    model.train_function = model.test_function = model.predict_function = None
    model._post_quantize("gptq")
    _record_policies(model)
    _reset_optimizer(model)
    calibrated_saving.keep_zero_points(model)
    return selected


def _calibration_windows(calibration_data, tokenizer, num_samples, sequence_length):
    """`num_samples` windows of `sequence_length` tokens, evenly spread over the concatenated data."""
    if isinstance(calibration_data[0], str):
        pieces = [np.asarray(tokenizer.encode(text), dtype=np.int32).reshape(-1) for text in calibration_data]
    else:
        pieces = [np.asarray(keras.ops.convert_to_numpy(ids), dtype=np.int32).reshape(-1) for ids in calibration_data]
    tokens = np.concatenate(pieces)
    if len(tokens) < sequence_length:
        raise ValueError(
            f"GPTQ calibration_data has {len(tokens)} tokens, fewer than one window of sequence_length="
            f"{sequence_length}; pass more text or a smaller sequence_length."
        )
    if num_samples <= 0:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}.")
    starts = np.linspace(0, len(tokens) - sequence_length, num_samples).round().astype(np.int64)
    return np.stack([tokens[start:start + sequence_length] for start in starts])
