"""Adds a term to a model's loss for the duration of `fit()`: the one mechanism callbacks share.

`Distillation` and `ElasticWeightConsolidation` change what the compiled training step minimizes by
wrapping `model.compute_loss` (the step calls it inside the traced function on every backend). Several
such callbacks may run in one `fit()`: each wrapper wraps whatever `compute_loss` was current, and
removing one, in any order, splices it out of the chain, so the model ends with its own loss.
"""

import inspect


class ComputeLossWrapper:
    """Makes `model.compute_loss` call `fn(inner, x, y, y_pred, sample_weight, training)`.

    `inner(x, y, y_pred, sample_weight, training)` is the loss the model had before. `owner` is the
    callback that installed the wrapper (so it can find a stale one of its own after a failed `fit()`).
    `metrics` (e.g. trackers of the added terms) join the model's metrics while the wrapper is installed.
    """

    def __init__(self, model, fn, owner, metrics=()):
        self.model = model
        self.fn = fn
        self.owner = owner
        self.metrics = list(metrics)
        self.installed = False

    def install(self):
        model = self.model
        self._had_own = "compute_loss" in model.__dict__
        self._set_inner(model.compute_loss)
        model.compute_loss = self
        model._metrics.extend(self.metrics)
        # An earlier trace would bypass the wrapper; rebuild the step functions.
        model.test_function = None
        model.make_train_function(force=True)
        self.installed = True

    def __call__(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self.fn(self.inner, x, y, y_pred, sample_weight, training)

    def inner(self, x, y, y_pred, sample_weight, training=True):
        if self._inner_has_training:
            return self._inner(x, y, y_pred, sample_weight, training=training)
        return self._inner(x, y, y_pred, sample_weight)

    def remove(self):
        if not self.installed:
            return
        model = self.model
        current = model.__dict__.get("compute_loss")
        if current is self:
            if self._had_own:
                model.compute_loss = self._inner
            else:
                del model.compute_loss
        else:  # wrapped again since: take this one out of the chain below the newer wrapper
            above = current
            while isinstance(above, ComputeLossWrapper) and above._inner is not self:
                above = above._inner
            if isinstance(above, ComputeLossWrapper):
                above._set_inner(self._inner)
                above._had_own = self._had_own
        for metric in self.metrics:
            model._metrics.remove(metric)
        model.train_function = None
        model.test_function = None
        self.installed = False

    def _set_inner(self, inner):
        self._inner = inner
        self._inner_has_training = "training" in inspect.signature(inner).parameters

    @staticmethod
    def installed_by(model, owner_type):
        """The wrappers in `model`'s chain installed by callbacks of `owner_type`."""
        found, current = [], model.__dict__.get("compute_loss")
        while isinstance(current, ComputeLossWrapper):
            if isinstance(current.owner, owner_type):
                found.append(current)
            current = current._inner
        return found
