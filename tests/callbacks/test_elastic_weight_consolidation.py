"""ElasticWeightConsolidation: Fisher and penalty against numpy, the pull towards the anchors, errors."""

import keras
import numpy as np
import pytest

import kerasllm
from kerasllm.callbacks.elastic_weight_consolidation import ewc_penalty


def _linear_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    # Adam's bounded steps stay stable under a stiff penalty, where plain SGD would diverge.
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    return model


def _task(seed, batches=3, batch_size=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batches, batch_size, 3)).astype("float32")
    w = rng.normal(size=(3, 2)).astype("float32")
    y = (x @ w + rng.normal(size=(2,))).astype("float32")
    return [(x[i], y[i]) for i in range(batches)]


def _numpy_fisher(kernel, bias, batches):
    """Per-batch empirical Fisher of mean squared error: mean over batches of the squared batch gradient."""
    fk, fb = np.zeros_like(kernel, dtype=np.float64), np.zeros_like(bias, dtype=np.float64)
    for x, y in batches:
        residual = x @ kernel + bias - y  # (B, 2)
        scale = 2.0 / residual.size  # d mean((r)^2) / d r
        fk += np.square(scale * x.T @ residual)
        fb += np.square(scale * residual.sum(0))
    return fk / len(batches), fb / len(batches)


def _start(model, callback):
    callback.set_model(model)
    callback.on_train_begin()


def test_fisher_equals_numpy_reference():
    model, batches = _linear_model(), _task(1)
    callback = kerasllm.callbacks.ElasticWeightConsolidation(batches, strength=1.0)
    kernel, bias = (np.asarray(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables)
    fisher = callback.compute_fisher(model)
    fk, fb = _numpy_fisher(kernel, bias, batches)
    np.testing.assert_allclose(fisher[0], fk, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(fisher[1], fb, rtol=1e-4, atol=1e-7)
    # num_batches limits the estimate to the first batches.
    limited = kerasllm.callbacks.ElasticWeightConsolidation(batches, strength=1.0, num_batches=1)
    np.testing.assert_allclose(limited.compute_fisher(model)[0], _numpy_fisher(kernel, bias, batches[:1])[0], rtol=1e-4)


def test_penalty_is_zero_at_anchors_and_matches_numpy():
    model, batches = _linear_model(), _task(1)
    strength = 3.0
    callback = kerasllm.callbacks.ElasticWeightConsolidation(batches, strength=strength)
    _start(model, callback)
    x, y = batches[0]
    y_pred = model(x)
    base = float(keras.ops.convert_to_numpy(model.__class__.compute_loss(model, x, y, y_pred)))
    wrapped = float(keras.ops.convert_to_numpy(model.compute_loss(x, y, y_pred)))
    assert wrapped == pytest.approx(base, abs=1e-6)  # zero penalty at the anchors

    anchors = [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]
    rng = np.random.default_rng(5)
    moved = [a + rng.normal(size=a.shape).astype("float32") for a in anchors]
    for variable, value in zip(model.trainable_variables, moved):
        variable.assign(value)
    expected = 0.5 * strength * sum(np.sum(f * (w - a) ** 2) for f, w, a in zip(callback.fisher_values, moved, anchors))
    assert expected > 0
    y_pred = model(x)
    base = float(keras.ops.convert_to_numpy(model.__class__.compute_loss(model, x, y, y_pred)))
    wrapped = float(keras.ops.convert_to_numpy(model.compute_loss(x, y, y_pred)))
    assert wrapped - base == pytest.approx(expected, rel=1e-4)
    direct = ewc_penalty(moved, anchors, callback.fisher_values, strength)
    assert float(keras.ops.convert_to_numpy(direct)) == pytest.approx(expected, rel=1e-5)
    callback.on_train_end()
    assert "compute_loss" not in model.__dict__


def _distance_after_fit(strength):
    model, old, new = _linear_model(), _task(1), _task(2)
    anchors = [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]
    x = np.concatenate([b[0] for b in new])
    y = np.concatenate([b[1] for b in new])
    callback = kerasllm.callbacks.ElasticWeightConsolidation(old, strength=strength)
    history = model.fit(x, y, batch_size=4, epochs=15, verbose=0, shuffle=False, callbacks=[callback])
    after = [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]
    distance = sum(np.sum(callback.fisher_values[i] * (after[i] - anchors[i]) ** 2) for i in range(2))
    return distance, history, model


def test_large_strength_keeps_weights_near_anchors():
    free, history_free, _ = _distance_after_fit(0.0)
    held, history_held, model = _distance_after_fit(1e3)
    assert free > 0.05
    assert held < 0.05 * free
    assert "ewc_penalty" in history_held.history
    assert history_held.history["ewc_penalty"][-1] > 0
    assert history_free.history["ewc_penalty"][-1] == 0
    # The model is plain again: no wrapper, no extra metrics.
    assert "compute_loss" not in model.__dict__
    assert "ewc_penalty" not in model.evaluate(*_task(2)[0], verbose=0, return_dict=True)


def test_fits_a_causal_lm():
    model = kerasllm.models.CausalLM(
        vocabulary_size=61, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16
    )
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=kerasllm.losses.CausalLMLoss())
    rng = np.random.default_rng(0)
    old = kerasllm.data.LanguageModelingDataset(rng.integers(0, 61, 2000), 8, 4, vocabulary_size=61)
    new = kerasllm.data.LanguageModelingDataset(rng.integers(0, 30, 2000), 8, 4, vocabulary_size=61)
    callback = kerasllm.callbacks.ElasticWeightConsolidation(old, strength=100.0, num_batches=2)
    history = model.fit(new, epochs=1, steps_per_epoch=3, verbose=0, callbacks=[callback])
    assert np.isfinite(history.history["ewc_penalty"][-1]) and history.history["ewc_penalty"][-1] > 0
    assert len(callback.fisher_values) == len(model.trainable_variables)
    assert all(np.all(f >= 0) for f in callback.fisher_values)


def test_errors():
    with pytest.raises(ValueError, match="previous_data"):
        kerasllm.callbacks.ElasticWeightConsolidation(None, strength=1.0)
    with pytest.raises(ValueError, match="strength"):
        kerasllm.callbacks.ElasticWeightConsolidation(_task(1), strength=-1.0)
    with pytest.raises(ValueError, match="fisher"):
        kerasllm.callbacks.ElasticWeightConsolidation(_task(1), strength=1.0, fisher="true")
    with pytest.raises(ValueError, match="num_batches"):
        kerasllm.callbacks.ElasticWeightConsolidation(_task(1), strength=1.0, num_batches=0)
    uncompiled = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="compiled model"):
        kerasllm.callbacks.ElasticWeightConsolidation(_task(1), 1.0).compute_fisher(uncompiled)
    model = _linear_model()
    with pytest.raises(ValueError, match="no batches"):
        model.fit(*_task(2)[0], verbose=0, callbacks=[kerasllm.callbacks.ElasticWeightConsolidation([], 1.0)])
    assert "compute_loss" not in model.__dict__
