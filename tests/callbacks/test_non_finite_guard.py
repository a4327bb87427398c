"""NonFiniteGuard: a NaN loss at a chosen step is undone exactly, or stops training, checkpoints intact."""

import os

import keras
import numpy as np
import pytest

import kerasllm

BATCH = 2


def _data(num_batches=4):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 11, size=(num_batches * BATCH, 9)).astype("int32")
    return ids[:, :-1], ids[:, 1:]


def _model():
    keras.utils.set_random_seed(0)
    model = kerasllm.models.CausalLM(vocabulary_size=11, num_layers=1, num_heads=2, hidden_dim=8,
                                     intermediate_dim=16, max_sequence_length=8)
    model.compile(optimizer="adam", loss=kerasllm.losses.CausalLMLoss())
    return model


def _fit(model, x, y, nan_steps=(), callbacks=()):
    """Fits one epoch of `BATCH`-sized batches; steps in `nan_steps` (from 1) get a NaN sample weight."""
    weights = np.ones(len(x), "float32")
    for step in nan_steps:
        weights[(step - 1) * BATCH : step * BATCH] = np.nan
    model.fit(x, y, sample_weight=weights, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=list(callbacks))


def test_skip_undoes_the_bad_step_exactly():
    x, y = _data()
    guard = kerasllm.callbacks.NonFiniteGuard(action="skip", verbose=False)
    model = _model()
    _fit(model, x, y, nan_steps=[3], callbacks=[guard])
    assert guard.bad_steps == [3] and guard.stopped_at is None
    assert int(model.optimizer.iterations) == 3
    # The same run without the bad batch: identical weights, as if the batch had never been there.
    keep = np.r_[0 : 2 * BATCH, 3 * BATCH : 4 * BATCH]
    reference = _model()
    _fit(reference, x[keep], y[keep])
    for got, expected in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, expected)


def test_skip_stops_after_patience_consecutive_bad_steps():
    x, y = _data()
    guard = kerasllm.callbacks.NonFiniteGuard(action="skip", patience=2, verbose=False)
    model = _model()
    _fit(model, x, y, nan_steps=[2, 3], callbacks=[guard])
    assert guard.bad_steps == [2, 3] and guard.stopped_at == 3
    assert int(model.optimizer.iterations) == 1
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_stop_keeps_checkpoints_and_the_last_good_weights(tmp_path, capsys):
    x, y = _data()
    guard = kerasllm.callbacks.NonFiniteGuard(action="stop")
    checkpoint = kerasllm.callbacks.Checkpoint(tmp_path, every_n_steps=1, keep=5)
    model = _model()
    with pytest.warns(UserWarning, match="step 3 has a non-finite loss; not saving it"):
        _fit(model, x, y, nan_steps=[3], callbacks=[checkpoint, guard])
    assert guard.stopped_at == 3 and guard.bad_steps == [3]
    assert "step 3 had a non-finite loss" in capsys.readouterr().out
    assert int(model.optimizer.iterations) == 2
    # Steps 1 and 2 saved and still there; the NaN step never saved, even at the end of training.
    names = [os.path.basename(p) for p in kerasllm.callbacks.Checkpoint.checkpoints(tmp_path)]
    assert names == ["step-000001", "step-000002"]
    reference = _model()
    _fit(reference, x[: 2 * BATCH], y[: 2 * BATCH])
    for got, expected in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, expected)


def test_state_round_trip_and_arguments():
    guard = kerasllm.callbacks.NonFiniteGuard()
    guard.set_state({"step": 7, "bad_steps": [5], "consecutive": 1})
    assert guard.get_state() == {"step": 7, "bad_steps": [5], "consecutive": 1}
    assert kerasllm.callbacks.NonFiniteGuard.from_config(guard.get_config()).action == "skip"
    with pytest.raises(ValueError, match="action"):
        kerasllm.callbacks.NonFiniteGuard(action="ignore")
    with pytest.raises(ValueError, match="patience"):
        kerasllm.callbacks.NonFiniteGuard(patience=0)
