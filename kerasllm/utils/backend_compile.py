"""The one backend-specific piece of generation: compiling a function of a model's variables.

`compile_with_variables(model, fn)` returns `compiled(*tensors)` that runs `fn(*tensors)` (written with
`keras.ops`, reading the model's variables) as one compiled program:

- JAX: `jax.jit`, with the variables' current values passed in as arguments and mapped back onto the
  variables with a `keras.StatelessScope` (as Keras's own train step and KerasHub's generate do), so
  new weights never trigger a recompile and are never baked in as constants.
- TensorFlow: `tf.function(jit_compile=True)` (XLA); the variables are captured by reference.
- torch: the loop runs in Python under `torch.no_grad()`, and its body, `trace_step(model, step)`, is
  traced once per input shapes into a graph of aten ops (`make_fx`) that replays without Keras's
  per-layer Python (about 4x faster per token for the tiny preset). `torch.compile` does not pay off
  here: Dynamo hits its recompile limit on Keras layers' attribute hooks (a minute of compiling for
  no gain, measured on the tiny preset).

Each backend retraces only for new input shapes or dtypes; a function runs in Python once per trace,
so a counter incremented inside it counts traces.
"""

import keras


def compile_with_variables(model, fn):
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax(model, fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, reduce_retracing=False)
    if backend == "torch":
        import torch

        def run(*args):
            with torch.no_grad():
                return fn(*args)

        return run
    raise ValueError(f"Generation is not supported on the {backend!r} backend.")


def _jax(model, fn):
    import jax

    @jax.jit
    def compiled(state, *args):
        trainable, non_trainable = state
        mapping = list(zip(model.trainable_variables, trainable)) + list(
            zip(model.non_trainable_variables, non_trainable)
        )
        with keras.StatelessScope(state_mapping=mapping):
            return fn(*args)

    def run(*args):
        # `.value` keeps each variable's sharding under keras.distribution.
        state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
        return compiled(state, *args)

    return run


def trace_step(model, step):
    """`step(*tensors) -> tensors` as a replayable graph on torch (identity elsewhere: the whole loop is
    compiled there).

    The model's variables are inputs of the graph, read at every call, so new weights are used without
    retracing. `step` must not read tensor values on the host (no `.item()`, no Python `if` on a
    tensor): the trace records tensor operations only.
    """
    if keras.backend.backend() != "torch":
        return step
    from torch.fx.experimental.proxy_tensor import make_fx

    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    graphs = {}

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return step(*args)

    def run(*args):
        values = [variable.value for variable in variables]
        key = tuple((tuple(arg.shape), str(arg.dtype)) for arg in keras.tree.flatten(args))
        if key not in graphs:
            graphs[key] = make_fx(stateless)(values, *args)
        return graphs[key](values, *args)

    run.graphs = graphs  # one per input shapes: tests count them
    return run


def write_positions(cache, start, update):
    """`cache` `(B, S, ...)` with `update` `(B, T, ...)` written at positions `start ... start + T - 1`.

    On torch, in place (`index_copy_`): Keras's `slice_update` with a tensor position clones the whole
    cache and scatters through a meshgrid of every index, at each decoding step. Callers give up the
    cache they pass (compiled decoding's per-layer caches). Elsewhere, `ops.slice_update`, which XLA
    performs in place inside its loop.
    """
    if keras.backend.backend() == "torch" and not isinstance(start, int):
        import torch

        positions = torch.arange(update.shape[1], device=cache.device) + start.to(cache.device)
        return cache.index_copy_(1, positions, update.to(cache.dtype))
    return keras.ops.slice_update(cache, (0, start) + (0,) * (len(cache.shape) - 2), keras.ops.cast(update, cache.dtype))
