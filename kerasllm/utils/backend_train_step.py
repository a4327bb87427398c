"""The one backend-specific piece of training: `compile(jit_compile=True)` on torch.

Keras 3.15 compiles a torch step with `torch.compile`, whose Dynamo front end runs Keras's Python. On
kerasllm models it breaks its graph in `ops.dot_product_attention` (Keras builds a pybind `SDPAParams`
there to ask whether flash attention applies) inside a `name_scope` context that cannot be split, so
every layer call becomes a frame of its own, and Keras's `_setattr_hook`, shared by all layers, hits
the recompile limit: minutes of compiling, then steps slower than eager (docs/benchmarks.md).

`compile_step(model, step)` runs Keras's own step (`model.train_step`, `test_step` or `predict_step`)
once per input shapes under `make_fx` with fake tensors (nothing is computed, no variable changes),
inside a `keras.StatelessScope` that maps every variable of the model, its optimizer and its metrics to
an input of the traced graph; the values the step assigns are copied into those inputs at its end
(Keras's torch optimizers update them in place already). The result is one graph of aten ops,
forward, backward and optimizer update, that updates the variables in place and replays with no Keras
Python, so it never retraces for new values; new input shapes trace a new graph. As on JAX, Python
state the step reads is fixed at trace time: callbacks that change it rebuild the step
(`model.make_train_function(force=True)`), as they must for JAX and TensorFlow.

A step that reads a tensor's value on the host cannot be traced: on torch `keras.ops.cond` does, and
with it the loss scaling of `mixed_float16` and gradient accumulation, as does seeded dropout. Such a
step runs eagerly, as Keras would without `jit_compile`, after a warning that says why.
"""

import warnings

import keras


# Calls of one traced graph before inductor compiles it (tens of seconds on CPU, more for large models):
# the batch shape of a run is compiled at its second step, a shape seen once (the last, partial batch of
# an epoch) only replays.
COMPILE_AFTER_CALLS = 2


def compiles(model):
    """Whether `model`'s steps are traced here: torch, with `jit_compile=True` asked for in `compile()`."""
    return keras.backend.backend() == "torch" and getattr(model, "jit_compile", False) is True


def compile_step(model, step, differentiate=False):
    """A Keras step function `run(data)` (`data`: a one-batch list, as `fit` passes) replayed as a graph.

    Args:
        model: compiled `keras.Model` (torch backend).
        step: `model.train_step`, `model.test_step` or `model.predict_step`.
        differentiate: bool. Whether the step computes gradients (the train step). Defaults to `False`.

    Returns:
        `run(data)`, with `run.graphs` (one traced graph per input shapes: tests count them).
    """
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    variables, graphs, eager_reason = [], {}, []

    def stateless(values, data):
        trainable = {id(v) for v in model.trainable_variables} if differentiate else set()
        # Gradients reach only leaves: aliases of the inputs, so in-place updates still land in them.
        mapped = [value.detach().requires_grad_() if id(v) in trainable else value for v, value in zip(variables, values)]
        with keras.StatelessScope(state_mapping=list(zip(variables, mapped))) as scope:
            outputs = step(data)
        with torch.no_grad():
            for variable, value, start in zip(variables, values, mapped):
                new = scope.get_current_value(variable)
                if new is not start:
                    value.copy_(new)
        return outputs

    def run(data):
        # Host arrays (`train_on_batch(numpy_x)`) become tensors: inputs of the graph, not constants in it.
        data = keras.tree.map_structure(
            lambda t: keras.ops.convert_to_tensor(t) if hasattr(t, "shape") and not torch.is_tensor(t) else t, data[0]
        )
        if eager_reason:
            return step(data)
        if not variables:  # Keras builds the optimizer and metrics before the first step
            variables.extend(_state_variables(model, with_optimizer=differentiate))
        values = [variable.value for variable in variables]
        key = str(keras.tree.map_structure(lambda t: (tuple(t.shape), str(t.dtype)) if hasattr(t, "shape") else t, data))
        graph = graphs.get(key)
        if graph is None:
            filtering = keras.config.is_traceback_filtering_enabled()
            keras.config.disable_traceback_filtering()  # keep the frames that say where tracing failed
            try:
                with torch.set_grad_enabled(differentiate):
                    # Other tensors the step reads (a distillation teacher's weights) are held by reference.
                    graph = make_fx(stateless, tracing_mode="fake", _allow_non_fake_inputs=True)(values, data)
            except Exception as error:
                outputs = step(data)  # an error of the step itself is raised here, as without jit_compile
                eager_reason.append(_describe(error))
                warnings.warn(
                    f"jit_compile=True: the torch {step.__name__} of {model.name!r} cannot be traced into a "
                    f"graph ({eager_reason[0]}), so it runs eagerly. Steps that read tensor values in Python "
                    "cannot be traced: on torch, keras.ops.cond (the loss scaling of mixed_float16, gradient "
                    "accumulation) and seeded dropout do.",
                    stacklevel=2,
                )
                return outputs
            finally:
                if filtering:
                    keras.config.enable_traceback_filtering()
            graphs[key] = _Graph(graph, f"{step.__name__} of {model.name!r}")
        return graphs[key](values, data)

    run.graphs = graphs
    run.eager_reason = eager_reason
    return run


class _Graph:
    """One traced step: replayed as traced (`torch.fx`) up to its `COMPILE_AFTER_CALLS`-th call, then by inductor."""

    def __init__(self, graph, name):
        self.graph, self.name = graph, name
        self.compiled, self.calls = None, 0

    def __call__(self, values, data):
        import torch

        self.calls += 1
        with torch.no_grad():  # the graph holds its backward pass: no autograd at run time
            if self.compiled is None and self.calls >= COMPILE_AFTER_CALLS:
                self.compiled = torch.compile(self.graph, fullgraph=True, dynamic=False)
                try:
                    return self.compiled(values, data)  # inductor compiles here, before running anything
                except Exception as error:  # e.g. no C++ compiler: keep replaying the traced graph
                    self.compiled = self.graph
                    warnings.warn(
                        f"jit_compile=True: inductor could not compile the torch {self.name} ({_describe(error)}); "
                        "it runs as a traced graph instead, without fusion.",
                        stacklevel=3,
                    )
            return (self.graph if self.compiled is None else self.compiled)(values, data)


def _describe(error):
    """`error`'s type and message, and the last line outside torch that led to it."""
    import os
    import traceback

    message = next((line for line in str(error).splitlines() if line.strip()), "")
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f"{os.sep}torch{os.sep}" not in f.filename]
    where = f" at {os.sep.join(frames[-1].filename.split(os.sep)[-4:])}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{where}: {message}"


def _state_variables(model, with_optimizer):
    """Every variable a Keras step reads or writes, once each, in a fixed order."""
    optimizer_variables = []
    if with_optimizer and model.optimizer is not None:
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        optimizer_variables = model.optimizer.variables
    seen, variables = set(), []
    for variable in (
        model.trainable_variables + model.non_trainable_variables + optimizer_variables + model.metrics_variables
    ):
        if id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables
