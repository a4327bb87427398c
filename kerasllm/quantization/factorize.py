"""Low-rank compression: `Dense` kernels replaced by two thin factors from a truncated SVD.

`factorize` returns a new model; `apply_low_rank` is the structural part (swapping `Dense` sublayers of
kerasllm attention / feed-forward layers for `kerasllm.layers.LowRankDense`), which is also what
rebuilds a factorized model from its plan (`low_rank_config`) before loading its weights.
"""

import contextlib

import keras
import numpy as np
from keras import ops

from kerasllm.layers.low_rank_dense import LowRankDense

# Dense sublayers of SelfAttention / FeedForward, by attribute name.
_ATTRIBUTES = ("query", "key", "value", "gate", "intermediate", "output_dense")


def factorize(model, rank=None, energy=0.9, layers=None, only_if_smaller=True):
    """Returns a smaller copy of `model` whose projections are two thin `Dense` factors (truncated SVD).

    Each selected `(in, out)` kernel `W = U S V^T` becomes `down` `(in, r)` = `U_r S_r^(1/2)` and `up`
    `(r, out)` = `S_r^(1/2) V_r^T` (the bias moves to `up`), inside a `kerasllm.layers.LowRankDense`
    that takes the `Dense` layer's place. `r` is `rank`, or else the smallest rank keeping `energy` of
    the squared singular values. A layer is left as it is when `r * (in + out) >= in * out` (no saving;
    the report says so) unless `only_if_smaller=False`. The input model is not modified. The copy is not compiled: compile it to
    fine-tune it with `fit`.

    Args:
        model: a built kerasllm model (`kerasllm.models.CausalLM`, `MaskedLM`, ...) with float weights.
        rank: int. Rank of every factorized layer. Defaults to `None` (chosen per layer by `energy`).
        energy: float in `(0, 1]`. Share of the squared singular values to keep when `rank` is `None`.
            Defaults to `0.9`.
        layers: `None`, or a regular expression (or list of them) matched against the `Dense` layer
            paths. Defaults to `None`: every attention and feed-forward projection.
        only_if_smaller: bool. Skip layers whose factors would not be smaller than the kernel.
            Defaults to `True`.

    Returns:
        `(factorized_model, report)`: `report` is a dict with `"parameters_before"`,
        `"parameters_after"` (the models' parameter counts), `"ranks"` (`{path: rank}`, the plan that
        `apply_low_rank` takes) and `"skipped"` (`{path: reason}`).

    Example:

    >>> small, report = kerasllm.quantization.factorize(model, energy=0.9)
    >>> report["parameters_before"], report["parameters_after"]
    >>> small.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())
    >>> small.fit(train, epochs=1)

    References:
        - [Eckart & Young, 1936](https://doi.org/10.1007/BF02288367)
        - [Denton et al., 2014](https://arxiv.org/abs/1404.0736)
    """
    from kerasllm.quantization.pruning import prunable_layers

    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0):
        raise ValueError(f"`rank` must be a positive integer (or None to choose it by `energy`), but got {rank!r}.")
    if rank is None and (isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1):
        raise ValueError(
            f"`energy` must be in (0, 1] (the share of squared singular values to keep), but got {energy!r}; "
            "e.g. 0.9."
        )
    factors_already = {id(sub) for layer in model._flatten_layers(include_self=True)
                       if isinstance(layer, LowRankDense) for sub in (layer.down, layer.up)}
    selected = [layer for layer in prunable_layers(model, layers) if id(layer) not in factors_already]
    if not selected:
        raise ValueError(
            f"factorize found no Dense layers to factorize in model {model.name!r}; pass `layers=` with a "
            "regular expression matching their paths."
        )
    plan, factors, skipped = {}, {}, {}
    for layer in selected:
        path = _relative_path(model, layer)
        if layer.quantization_mode is not None:
            raise ValueError(
                f"Layer {layer.path!r} is quantized ({layer.quantization_mode!r}); factorize the float model."
            )
        kernel = ops.convert_to_numpy(layer.kernel).astype("float64")
        inputs, outputs = kernel.shape
        if rank is not None and rank > min(inputs, outputs):
            raise ValueError(
                f"rank={rank} is larger than layer {layer.path!r} allows: its kernel is {inputs}x{outputs}, "
                f"so the rank is at most {min(inputs, outputs)}. Pass a smaller rank or use `energy=`."
            )
        u, s, vt = np.linalg.svd(kernel, full_matrices=False)
        r = rank if rank is not None else energy_rank(s, energy)
        if only_if_smaller and r * (inputs + outputs) >= inputs * outputs:
            skipped[path] = (
                f"rank {r} needs {r * (inputs + outputs)} weights, the {inputs}x{outputs} kernel has "
                f"{inputs * outputs}: no saving"
            )
            continue
        root = np.sqrt(s[:r])
        bias = None if layer.bias is None else ops.convert_to_numpy(layer.bias)
        plan[path] = int(r)
        factors[path] = (u[:, :r] * root, root[:, None] * vt[:r], bias)

    factorized = model.__class__.from_config(model.get_config())
    if not factorized.built:
        raise ValueError(f"{type(model).__name__} is not built by its constructor; factorize supports kerasllm models.")
    factorized.set_weights(model.get_weights())
    apply_low_rank(factorized, plan)
    for path, (down, up, bias) in factors.items():
        low_rank = _find(factorized, path)
        low_rank.down.kernel.assign(down.astype(low_rank.down.kernel.dtype))
        low_rank.up.kernel.assign(up.astype(low_rank.up.kernel.dtype))
        if bias is not None:
            low_rank.up.bias.assign(bias)
    report = {
        "parameters_before": int(model.count_params()),
        "parameters_after": int(factorized.count_params()),
        "ranks": plan,
        "skipped": skipped,
    }
    return factorized, report


def energy_rank(singular_values, energy):
    """Smallest `r` whose first `r` squared singular values hold at least `energy` of their sum."""
    squared = np.asarray(singular_values, dtype="float64") ** 2
    kept = np.cumsum(squared) / squared.sum()
    # A small tolerance so that `energy=1` gives the numerical rank, not the last rounding error.
    return int(min(np.searchsorted(kept, energy - 1e-12) + 1, len(squared)))


def apply_low_rank(model, ranks):
    """Replaces, in place, the `Dense` layers at `ranks`' paths by `LowRankDense` layers of those ranks.

    Args:
        model: a built model whose `Dense` layers sit in kerasllm `SelfAttention` / `FeedForward` layers.
        ranks: dict `{path without the model's name: rank}`, e.g.
            `{"backbone/block_0/attention/query": 8}` (`factorize`'s `report["ranks"]`).

    Returns:
        The same `model`. The new factors are freshly initialized: load weights after.
    """
    from kerasllm.layers.feed_forward import FeedForward
    from kerasllm.layers.self_attention import SelfAttention

    remaining = dict(ranks)
    for parent in model._flatten_layers(include_self=True):
        if not isinstance(parent, (SelfAttention, FeedForward)):
            continue
        for attribute in _ATTRIBUTES:
            dense = getattr(parent, attribute, None)
            if not isinstance(dense, keras.layers.Dense):
                continue
            path = _relative_path(model, dense)
            if path not in remaining:
                continue
            rank = remaining.pop(path)
            with contextlib.ExitStack() as scopes:
                for part in parent.path.split("/"):  # variable paths: <parent>/<name>/down/kernel
                    scopes.enter_context(keras.name_scope(part))
                replacement = LowRankDense(
                    dense.units, rank, use_bias=dense.use_bias, dtype=dense.dtype_policy, name=dense.name
                )
                replacement.build(tuple(dense.kernel.shape[:1]))
            parent._tracker.unlock()
            try:
                if dense in parent._layers:
                    parent._layers.remove(dense)
                setattr(parent, attribute, replacement)
            finally:
                parent._tracker.lock()
    if remaining:
        raise ValueError(f"No Dense layer at {sorted(remaining)} in model {model.name!r}; check the paths.")
    for name in ("train_function", "test_function", "predict_function"):
        setattr(model, name, None)
    return model


def low_rank_config(model):
    """The plan `{path: rank}` of `model`'s `LowRankDense` layers (what `apply_low_rank` takes)."""
    return {
        _relative_path(model, layer): layer.rank
        for layer in model._flatten_layers(include_self=True)
        if isinstance(layer, LowRankDense)
    }


def _relative_path(model, layer):
    return layer.path[len(model.name) + 1:] if layer.path.startswith(model.name + "/") else layer.path


def _find(model, path):
    for layer in model._flatten_layers(include_self=True):
        if isinstance(layer, LowRankDense) and _relative_path(model, layer) == path:
            return layer
    raise ValueError(f"No LowRankDense at {path!r}.")
