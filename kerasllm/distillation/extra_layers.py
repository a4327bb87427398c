"""Trains extra layers with a model during `fit()` and detaches them afterwards.

Feature distillation projects the student's hidden states to the teacher's width with layers that must
learn with the student but must not stay in it. `fit()` computes gradients for
`model.trainable_variables` and has built the optimizer for exactly those before any callback runs, so
attaching layers also means an optimizer that knows their variables: a copy of the model's optimizer
(same class and configuration) built for the extended list, which takes over every slot value of the
original by variable name. Detaching copies the values back into the user's optimizer object, so its
step count and moments go on from where training left them, and no slot of a projection remains in it
(nor, therefore, in the saved model).
"""

import keras


class ExtraLayers:
    """Attaches built `layers` to `model` and its optimizer; `detach()` undoes it.

    While attached, the layers' variables are tracked as the model's own (through Keras's
    `_track_variable`, which also registers them as PyTorch parameters so that the torch trainer's
    `zero_grad()` clears their gradients every step), so `model.save_weights` and therefore
    `kerasllm.callbacks.Checkpoint` store and restore them with the model.

    Args:
        model: compiled `keras.Model`.
        layers: list of built `keras.layers.Layer`, trained with the model while attached.
    """

    def __init__(self, model, layers):
        self.model = model
        self.layers = list(layers)
        self.original_optimizer = None

    def attach(self):
        model = self.model
        optimizer = model.optimizer
        if optimizer is None:
            raise ValueError("The model is not compiled: call `model.compile(optimizer=...)` before `fit()`.")
        if not optimizer.built:
            # TensorFlow's `fit()` builds it lazily; build it now so that `detach` has slots to copy into.
            optimizer.build(model.trainable_variables)
        # Keras's own `enable_lora` adds state to a built layer the same way.
        locked = model._tracker.locked
        model._tracker.unlock()
        for variable in self._variables():
            model._track_variable(variable)
        if locked:
            model._tracker.lock()
        extended = optimizer.__class__.from_config(optimizer.get_config())
        extended.build(model.trainable_variables)
        _copy_by_name(optimizer.variables, extended.variables)
        self.original_optimizer = optimizer
        model.optimizer = extended

    def detach(self):
        model = self.model
        if self.original_optimizer is None:
            return
        _copy_by_name(model.optimizer.variables, self.original_optimizer.variables)
        model.optimizer = self.original_optimizer
        self.original_optimizer = None
        for variable in self._variables():
            model._untrack_variable(variable)

    def _variables(self):
        return [variable for layer in self.layers for variable in layer.variables]


def _copy_by_name(source, target):
    """Assigns each variable in `target` the value of the same-named, same-shaped one in `source`."""
    values = {variable.name: variable for variable in source}
    for variable in target:
        match = values.get(variable.name)
        if match is not None and tuple(match.shape) == tuple(variable.shape):
            variable.assign(keras.ops.convert_to_tensor(match.value, dtype=variable.dtype))
