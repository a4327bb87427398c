import keras
import numpy as np
from keras.src.backend.common import global_state

import kerasllm
from kerasllm.utils import deferred_variables


def _registry():
    return global_state.get_global_attribute("uninitialized_variables") or []


def build():
    return kerasllm.models.CausalLM(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=8,
        dropout=0.1,
    )


def test_variables_get_the_given_values_and_leave_the_registry():
    with deferred_variables.uninitialized_variables():
        model = build()
    assert not any(deferred_variables.is_initialized(v) for v in model.variables)
    values = {}
    for i, variable in enumerate(model.weights):
        values[variable.path] = np.full(variable.shape, 0.01 * (i + 1), dtype="float32")
        deferred_variables.initialize(variable, values[variable.path])
    for variable in model.variables:  # dropout's seed state: its own initializer
        if not deferred_variables.is_initialized(variable):
            deferred_variables.initialize(variable)
    assert not _registry()
    for variable in model.weights:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), values[variable.path])
    assert np.isfinite(keras.ops.convert_to_numpy(model(np.array([[1, 2, 3]])))).all()
    model.weights[0].assign(np.zeros(model.weights[0].shape, "float32"))  # an ordinary variable now
    assert not keras.ops.convert_to_numpy(model.weights[0]).any()


def test_discard_forgets_variables_of_a_failed_load():
    with deferred_variables.uninitialized_variables():
        model = build()
    assert len(_registry()) >= len(model.variables)
    deferred_variables.discard(model.variables)
    assert not _registry()
    # A later stateless scope that initializes on exit must not trip over them.
    with keras.StatelessScope():
        pass
