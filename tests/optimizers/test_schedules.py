import gc
import math

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.optimizers import WarmupCosineDecay
from kerasllm.optimizers.schedules import eager_safe_schedule

STEPS = [0, 1, 3, 4, 5, 9, 10, 11, 50, 99, 109, 110, 111, 500]


def numpy_reference(step, initial, decay_steps, alpha, target, warmup):
    if target is None:
        step = min(step, decay_steps)
        return initial * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / decay_steps)) + alpha)
    step = min(step, decay_steps + warmup)
    if step < warmup:
        return initial + (target - initial) * step / warmup
    progress = (step - warmup) / decay_steps
    return target * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * progress)) + alpha)


SETTINGS = [
    dict(initial_learning_rate=0.0, decay_steps=100, alpha=0.1, warmup_target=3e-3, warmup_steps=10),
    dict(initial_learning_rate=1e-4, decay_steps=100, alpha=0.0, warmup_target=3e-3, warmup_steps=5),
    dict(initial_learning_rate=0.0, decay_steps=100, alpha=0.2, warmup_target=3e-3, warmup_steps=0),
    dict(initial_learning_rate=2e-3, decay_steps=100, alpha=0.3),
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_values_equal_numpy_and_keras_cosine_decay(settings):
    ours = WarmupCosineDecay(**settings)
    keras_schedule = keras.optimizers.schedules.CosineDecay(**settings)
    for step in STEPS:
        expected = numpy_reference(step, settings["initial_learning_rate"], settings["decay_steps"],
                                   settings["alpha"], settings.get("warmup_target"), settings.get("warmup_steps", 0))
        value = float(ops.convert_to_numpy(ours(step)))
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-10)
        np.testing.assert_allclose(value, float(ops.convert_to_numpy(keras_schedule(step))), rtol=1e-6, atol=1e-10)
        assert math.isfinite(value)


def test_eager_calls_keep_no_state():
    # Keras's CosineDecay with a warmup keeps a new trace per eager call on JAX (about 1.6 MB each).
    schedule = WarmupCosineDecay(0.0, 100, alpha=0.1, warmup_target=1e-3, warmup_steps=10)
    for step in range(20):  # warm any one-off caches
        float(ops.convert_to_numpy(schedule(step)))
    gc.collect()
    before = len(gc.get_objects())
    for step in range(20, 120):
        float(ops.convert_to_numpy(schedule(step)))
    gc.collect()
    assert len(gc.get_objects()) - before < 100


def test_config_round_trip_and_registration():
    schedule = WarmupCosineDecay(0.0, 90, alpha=0.1, warmup_target=6e-4, warmup_steps=10)
    config = keras.optimizers.schedules.serialize(schedule)
    restored = keras.optimizers.schedules.deserialize(config)
    assert type(restored) is WarmupCosineDecay
    assert restored.get_config() == schedule.get_config()
    for step in (0, 5, 10, 50, 200):
        assert float(ops.convert_to_numpy(restored(step))) == float(ops.convert_to_numpy(schedule(step)))


def test_create_optimizer_uses_it_and_a_saved_model_reloads_it(tmp_path):
    optimizer = kerasllm.optimizers.create_optimizer(1e-3, total_steps=50, warmup_steps=5)
    assert type(optimizer.learning_rate_schedule if hasattr(optimizer, "learning_rate_schedule")
                else optimizer._learning_rate) is WarmupCosineDecay
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((8, 3)), np.zeros((8, 2)), epochs=1, batch_size=4, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded.optimizer._learning_rate) is WarmupCosineDecay
    np.testing.assert_allclose(float(ops.convert_to_numpy(reloaded.optimizer.learning_rate)),
                               float(ops.convert_to_numpy(model.optimizer.learning_rate)), rtol=1e-7)


def test_eager_safe_schedule_swaps_only_keras_cosine_decay_with_warmup():
    warm = keras.optimizers.schedules.CosineDecay(0.0, 100, warmup_target=1e-3, warmup_steps=10)
    swapped = eager_safe_schedule(warm)
    assert type(swapped) is WarmupCosineDecay and swapped.get_config() | {"name": None} == \
        warm.get_config() | {"name": None}
    plain = keras.optimizers.schedules.CosineDecay(1e-3, 100)
    assert eager_safe_schedule(plain) is plain
    ours = WarmupCosineDecay(0.0, 100, warmup_target=1e-3, warmup_steps=10)
    assert eager_safe_schedule(ours) is ours
