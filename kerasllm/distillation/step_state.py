"""State that the distillation callback adds to the compiled training step, held in metrics.

A metric's variables are part of the state `fit()` hands to the compiled step on every backend (on JAX,
`metrics_variables`, written back when `fit()` syncs), so values put there can change between steps
without a retrace, and variables listed there are inputs of the step instead of constants baked into it.
"""

import keras
from keras import ops


class ScheduledValue(keras.metrics.Metric):
    """Holds a scheduled scalar in a metric variable; reports it as its result, never resets."""

    def __init__(self, value, name):
        super().__init__(name=name, dtype="float32")
        self.variable = self.add_variable(shape=(), initializer=keras.initializers.Constant(value), name="value")
        self.last_value = value

    def set(self, value):
        self.variable.assign(value)
        self.last_value = value

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass

    def result(self):
        # A computed copy: on JAX the variable's own buffer is donated to the next step.
        return ops.multiply(self.variable, 1.0)


class StepState(keras.metrics.Metric):
    """Exposes other objects' variables (a teacher's weights, a seed generator) as metric variables.

    JAX's compiled step is a pure function of the state `fit()` passes in; weights it merely closes over
    are baked into the program as constants (a GPT-2-sized teacher would be hundreds of MB of program),
    and a seed generator's state would never advance. Listed here, they are inputs of the step, unchanged
    by it (the teacher) or updated by it (the seed), and written back when `fit()` syncs.
    """

    def __init__(self, variables_fn, name="distillation_state"):
        super().__init__(name=name)
        self._variables_fn = variables_fn

    @property
    def variables(self):
        return list(self._variables_fn())

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass

    def result(self):
        return {}
