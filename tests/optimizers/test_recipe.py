import math

import keras
import numpy as np
import pytest
from keras import ops

from kerasllm.optimizers import AdamW
from kerasllm.optimizers import create_optimizer


def numpy_schedule(step, peak, total, warmup, ratio):
    if step < warmup:
        return peak * step / warmup
    progress = min(step - warmup, total - warmup) / (total - warmup)
    return peak * ((1 - ratio) * 0.5 * (1 + math.cos(math.pi * progress)) + ratio)


def learning_rate_at(optimizer, step):
    optimizer.iterations.assign(step)
    return float(ops.convert_to_numpy(optimizer.learning_rate))


@pytest.mark.parametrize("warmup_steps,expected_warmup", [(10, 10), (None, 5), (0, 0)])
def test_schedule_matches_numpy(warmup_steps, expected_warmup):
    optimizer = create_optimizer(3e-3, total_steps=100, warmup_steps=warmup_steps, min_learning_rate_ratio=0.2)
    for step in [0, 1, 4, 5, 9, 10, 11, 50, 99, 100, 150]:
        expected = numpy_schedule(step, 3e-3, 100, expected_warmup, 0.2)
        np.testing.assert_allclose(learning_rate_at(optimizer, step), expected, rtol=1e-5, atol=1e-9)
    assert learning_rate_at(optimizer, 0) == (0.0 if expected_warmup else pytest.approx(3e-3))


def test_constant_learning_rate_without_total_steps():
    optimizer = create_optimizer(2e-4)
    assert learning_rate_at(optimizer, 0) == pytest.approx(2e-4)
    assert learning_rate_at(optimizer, 1000) == pytest.approx(2e-4)


def test_recipe_settings_reach_the_optimizer():
    optimizer = create_optimizer(1e-3, total_steps=10, weight_decay=0.05, gradient_accumulation_steps=4)
    assert isinstance(optimizer, AdamW)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.weight_decay) == (0.9, 0.95, 0.05)
    assert optimizer.global_clipnorm == 1.0
    assert optimizer.gradient_accumulation_steps == 4
    assert optimizer.no_decay == ("bias", "norm", "embedding")
    assert create_optimizer(gradient_accumulation_steps=1).gradient_accumulation_steps is None
    assert create_optimizer(global_clipnorm=None, no_decay=()).get_config()["no_decay"] is None


def test_default_no_decay_excludes_bias_norm_and_embedding():
    inputs = keras.Input((4,), dtype="int32")
    hidden = keras.layers.Embedding(5, 3)(inputs)
    hidden = keras.layers.LayerNormalization()(hidden)  # variables named "gamma" and "beta"
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))
    optimizer = create_optimizer(0.1, weight_decay=0.5)
    variables = model.trainable_variables
    before = [ops.convert_to_numpy(v.value).copy() for v in variables]
    optimizer.apply([ops.zeros(v.shape) for v in variables], variables)  # zero gradients: only decay moves
    decayed = []
    for variable, old in zip(variables, before):
        new = ops.convert_to_numpy(variable.value)
        if not np.allclose(new, old):
            np.testing.assert_allclose(new, old * (1 - 0.1 * 0.5), rtol=1e-6)
            decayed.append(variable.path)
    assert decayed == ["head/kernel"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 10, "warmup_steps": 10}, "warmup_steps"),
        ({"total_steps": 10, "warmup_steps": -1}, "warmup_steps"),
        ({"warmup_steps": 5}, "total_steps"),
        ({"warmup_fraction": 1.0}, "warmup_fraction"),
        ({"min_learning_rate_ratio": 1.5}, "min_learning_rate_ratio"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"beta_2": 1.0}, "beta_2"),
        ({"global_clipnorm": 0.0}, "global_clipnorm"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_optimizer(**kwargs)
