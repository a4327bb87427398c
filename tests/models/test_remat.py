"""`remat=True`: blocks recompute their activations in the backward pass; training is unchanged."""

import keras
import numpy as np
import pytest

import kerasllm

CONFIG = dict(vocabulary_size=61, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
              max_sequence_length=16)


def one_step(remat):
    keras.utils.set_random_seed(0)
    model = kerasllm.models.CausalLM(**CONFIG, remat=remat)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=kerasllm.losses.CausalLMLoss())
    tokens = np.random.default_rng(1).integers(0, 61, size=(4, 17))
    model.fit(tokens[:, :-1], tokens[:, 1:], batch_size=4, epochs=1, shuffle=False, verbose=0)
    return model


def test_remat_trains_exactly_like_the_plain_model():
    plain, remat = one_step(False), one_step(True)
    before = kerasllm.models.CausalLM(**CONFIG)
    moved = max(np.abs(a - b).max() for a, b in zip(plain.get_weights(), before.get_weights()))
    assert moved > 1e-3
    for a, b in zip(remat.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_remat_is_saved_in_the_config(tmp_path):
    model = kerasllm.models.CausalLM(**CONFIG, remat=True)
    assert model.get_config()["remat"] is True
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.remat is True and loaded.backbone.remat is True
    x = np.random.default_rng(0).integers(0, 61, size=(2, 16))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)),
                               atol=1e-6)


def test_remat_must_be_a_bool_and_not_combined_with_dropout():
    with pytest.raises(ValueError, match="remat"):
        kerasllm.models.CausalLM(**CONFIG, remat="full")
    with pytest.raises(ValueError, match="dropout=0"):
        kerasllm.models.CausalLM(**CONFIG, remat=True, dropout=0.1)


def test_train_command_builds_a_rematerialized_model():
    import argparse

    from kerasllm.cli.train import build_preset_model

    args = argparse.Namespace(preset="tiny", seq_len=16, precision="float32", remat=True)
    assert build_preset_model(args, vocabulary_size=61).remat is True
