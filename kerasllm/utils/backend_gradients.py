"""The one backend-specific piece of continual learning: gradients of the compiled loss outside `fit()`.

`keras.ops` has no gradient operation, and `model.fit()` computes gradients only inside its own training
step. `ElasticWeightConsolidation` needs them before training starts (the Fisher information of the previous
task), so this module asks each backend directly, the way Keras's own trainers do
(`keras/src/backend/{jax,tensorflow,torch}/trainer.py`).

It also holds the one TensorFlow-only workaround about gradients: `forget_custom_gradients`.
"""

import contextlib
import weakref

import keras
import numpy as np

# One compiled gradient function per model (JAX and TensorFlow), reused across batches.
_COMPILED = weakref.WeakKeyDictionary()


def loss_gradients(model, x, y=None, sample_weight=None):
    """Gradients of `model.compute_loss` on one batch, in inference mode (no dropout).

    Args:
        model: compiled `keras.Model`.
        x: the batch's inputs.
        y: the batch's targets. Defaults to `None`.
        sample_weight: the batch's sample weights. Defaults to `None`.

    Returns:
        A list of float32 numpy arrays, one per `model.trainable_variables` entry (zeros for a variable the
        loss does not depend on).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        grads = _jax_gradients(model, x, y, sample_weight)
    elif backend == "torch":
        grads = _torch_gradients(model, x, y, sample_weight)
    elif backend == "tensorflow":
        grads = _tensorflow_gradients(model, x, y, sample_weight)
    else:
        raise ValueError(f"Gradients are implemented for jax, torch and tensorflow, not {backend!r}.")
    return [
        np.zeros(tuple(v.shape), np.float32) if g is None else np.asarray(keras.ops.convert_to_numpy(g), np.float32)
        for v, g in zip(model.trainable_variables, grads)
    ]


def _jax_gradients(model, x, y, sample_weight):
    import jax

    if model not in _COMPILED:

        def loss_fn(trainable, non_trainable, metrics, x, y, sample_weight):
            loss, _ = model.compute_loss_and_updates(
                trainable, non_trainable, metrics, x, y, sample_weight, training=False
            )
            return loss

        _COMPILED[model] = jax.jit(jax.grad(loss_fn))
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    metrics = [v.value for v in model.metrics_variables]
    return _COMPILED[model](trainable, non_trainable, metrics, x, y, sample_weight)


def _torch_gradients(model, x, y, sample_weight):
    import torch

    with torch.enable_grad():
        y_pred = model(x, training=False)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)
        parameters = [v.value for v in model.trainable_variables]
        return torch.autograd.grad(loss, parameters, allow_unused=True)


def _tensorflow_gradients(model, x, y, sample_weight):
    import tensorflow as tf

    if model not in _COMPILED:

        @tf.function(reduce_retracing=True)
        def gradients(x, y, sample_weight):
            with tf.GradientTape() as tape:
                y_pred = model(x, training=False)
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)
            return tape.gradient(loss, model.trainable_variables)

        _COMPILED[model] = gradients
    return _COMPILED[model](x, y, sample_weight)


@contextlib.contextmanager
def forget_custom_gradients():
    """On TensorFlow, removes the custom-gradient registrations made inside the block when it ends.

    Every time TensorFlow traces a function that calls a `tf.custom_gradient` op (Keras's optimizer
    step does, through `ReplicaContext.all_reduce`; so does `tf.nn.silu`), it registers the gradient
    under a new name in a global registry that is never emptied. The registered function holds the
    traced graph, and the graph holds the model's variables: on TensorFlow 2.21 every model compiled
    and trained in a process stays in memory after it is deleted (about 300 MB for a 27M-parameter
    `CausalLM` with AdamW, measured in `docs/benchmarks.md`). A registration is only read while its function is
    traced, so once `fit` has returned, the model's traced steps no longer need theirs; use this
    around work whose traces are then discarded (a tuning trial). On JAX and torch it does nothing.
    """
    registry = None
    if keras.backend.backend() == "tensorflow":
        from tensorflow.python.framework import ops

        registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    if not isinstance(registry, dict):  # another backend, or TensorFlow's internals have changed
        yield
        return
    known = set(registry)
    try:
        yield
    finally:
        for name in [name for name in registry if name not in known and name.startswith("CustomGradient-")]:
            del registry[name]
