"""`forget_custom_gradients`: TensorFlow's custom-gradient registry no longer keeps trained models alive."""

import contextlib
import gc

import keras
import numpy as np
import pytest

import kerasllm
from kerasllm.utils.backend_gradients import forget_custom_gradients

TENSORFLOW = keras.backend.backend() == "tensorflow"
CONFIG = dict(vocabulary_size=31, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=8)
TOKENS = np.random.default_rng(0).integers(0, 31, (8, 9))


def registered():
    """The names of TensorFlow's registered custom gradients (empty on other backends)."""
    if not TENSORFLOW:
        return set()
    from tensorflow.python.framework import ops

    return {name for name in ops._gradient_registry._registry if name.startswith("CustomGradient-")}


def live_graphs():
    gc.collect()
    return sum(type(o).__name__ == "FuncGraph" for o in gc.get_objects())


def trained(block):
    model = kerasllm.models.CausalLM(**CONFIG)
    model.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())
    with block:
        model.fit(TOKENS[:, :-1], TOKENS[:, 1:], batch_size=4, verbose=0)
    return model


def test_a_trained_models_graphs_are_released():
    trained(contextlib.nullcontext())  # caches that outlive a model are filled now
    graphs, names = live_graphs(), registered()
    model = trained(forget_custom_gradients())
    assert registered() == names
    before = model.evaluate(TOKENS[:, :-1], TOKENS[:, 1:], verbose=0)
    # The traced step does not need its registration any more: the model trains on.
    model.fit(TOKENS[:, :-1], TOKENS[:, 1:], batch_size=4, epochs=3, verbose=0)
    assert model.evaluate(TOKENS[:, :-1], TOKENS[:, 1:], verbose=0) < before
    del model
    assert live_graphs() == graphs
    if TENSORFLOW:  # the leak the block exists for: without it, the traced graphs stay
        trained(contextlib.nullcontext())
        assert len(registered() - names) >= 1 and live_graphs() > graphs


def test_a_tuning_trial_leaves_no_registrations():
    keras_tuner = pytest.importorskip("keras_tuner")
    space = kerasllm.tuning.SearchSpace(learning_rate=(1e-3, 1e-2), warmup_steps=None, batch_size=None)
    hypermodel = kerasllm.tuning.CausalLMHyperModel(dict(CONFIG, max_sequence_length=16), space, steps=2, seed=0)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    ids = np.random.default_rng(0).integers(0, 31, 600)
    train = kerasllm.data.LanguageModelingDataset(ids[:400], 16, 4, vocabulary_size=31)
    validation = kerasllm.data.LanguageModelingDataset(ids[400:], 16, 4, shuffle=False, vocabulary_size=31)
    names = registered()
    history = hypermodel.fit(hp, hypermodel.build(hp), train, validation_data=validation)
    assert np.isfinite(history.history["val_loss"][-1])
    assert registered() == names
