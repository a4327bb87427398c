"""Per-variable learning rates for any Keras optimizer, and layer-wise learning-rate decay.

Keras optimizers use one learning rate for every variable. `scale_learning_rates` makes an optimizer
use `learning_rate * multiplier` for chosen variables by rescaling each step's update: the optimizer
steps as usual, then each chosen variable is set to `old + multiplier * (new - old)`. For SGD, Adam,
AdamW, Lion and the other Keras optimizers whose update is proportional to the learning rate (weight
decay included), that is exactly a step with the scaled learning rate. Optimizer state (moments) is
unchanged, as in the per-parameter-group learning rates of PyTorch.

`layer_decay_multipliers` gives the ELECTRA/BEiT recipe for fine-tuning: the head and the final norm
train at the full rate, block `i` of `L` at `decay ** (L - i)`, and the embeddings (lowest) at
`decay ** (L + 1)`.

References:
    - [Clark et al., 2020 (ELECTRA), layer-wise learning-rate decay](https://arxiv.org/abs/2003.10555)
"""

from keras import ops


def scale_learning_rates(optimizer, multipliers):
    """Makes `optimizer` step chosen variables with `learning_rate * multiplier`.

    Works on all three backends (the JAX trainer's stateless step included) because it wraps the
    optimizer's `apply`, through which every Keras trainer applies gradients. Calling it again on the
    same optimizer replaces the previous multipliers.

    Args:
        optimizer: a `keras.optimizers.Optimizer` instance.
        multipliers: iterable of `(variable, multiplier)` pairs. Variables not listed keep the full
            learning rate.

    Returns:
        The same optimizer, modified in place.

    Example:

    ```python
    optimizer = keras.optimizers.AdamW(1e-4)
    kerasllm.optimizers.scale_learning_rates(
        optimizer, [(v, 0.1) for v in model.backbone.token_embedding.weights]
    )
    model.compile(optimizer=optimizer, loss=...)
    ```
    """
    scales = {}
    for variable, multiplier in multipliers:
        multiplier = float(multiplier)
        if not multiplier >= 0.0:
            raise ValueError(f"Learning-rate multipliers must be >= 0, got {multiplier} for {variable.path!r}.")
        if multiplier != 1.0:
            scales[id(variable)] = multiplier
    original = getattr(optimizer, "_kerasllm_unscaled_apply", None) or optimizer.apply

    def apply(grads, trainable_variables=None):
        variables = trainable_variables if trainable_variables is not None else optimizer._trainable_variables
        chosen = [(v, scales[id(v)], ops.copy(v.value)) for v in variables if id(v) in scales]
        result = original(grads, trainable_variables)
        for variable, multiplier, old in chosen:
            new = variable.value
            variable.assign(ops.cast(old + multiplier * (ops.cast(new, old.dtype) - old), new.dtype))
        return result

    # Plain attributes (not tracked state): the optimizer's config and variables are unchanged.
    object.__setattr__(optimizer, "_kerasllm_unscaled_apply", original)
    object.__setattr__(optimizer, "apply", apply)
    return optimizer


def layer_decay_multipliers(backbone, decay, head_variables=()):
    """`(variable, multiplier)` pairs for layer-wise learning-rate decay over a `TransformerBackbone`.

    Args:
        backbone: a `kerasllm.models.TransformerBackbone`.
        decay: float in (0, 1]. Per-layer factor.
        head_variables: variables above the backbone (e.g. a classification head); full rate.

    Returns:
        A list of `(variable, multiplier)`: block `i` of `L` gets `decay ** (L - i)`, the token and
        position embeddings and any soft prompt `decay ** (L + 1)`, the final norm and the head `1`.
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"layer_decay must lie in (0, 1], got {decay!r}; 0.65 to 0.95 are usual, 1 disables it.")
    num_layers = len(backbone.blocks)
    pairs = []
    embeddings = [backbone.token_embedding, backbone.position_embedding, getattr(backbone, "soft_prompt", None)]
    for layer in embeddings:
        if layer is not None:
            pairs += [(v, decay ** (num_layers + 1)) for v in layer.weights]
    for i, block in enumerate(backbone.blocks):
        pairs += [(v, decay ** (num_layers - i)) for v in block.weights]
    pairs += [(v, 1.0) for v in backbone.final_norm.weights]
    pairs += [(v, 1.0) for v in head_variables]
    return pairs
