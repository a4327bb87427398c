import csv
import math

import keras
import numpy as np
import pytest

from kerasllm.callbacks import TrainingLogger
from kerasllm.losses import CausalLMLoss
from kerasllm.metrics import Perplexity
from kerasllm.optimizers import create_optimizer

VOCABULARY, LENGTH = 9, 5


def tiny_model():
    inputs = keras.Input((LENGTH,), dtype="int32")
    hidden = keras.layers.Embedding(VOCABULARY, 8)(inputs)
    return keras.Model(inputs, keras.layers.Dense(VOCABULARY)(hidden))


def data(n):
    x = np.random.randint(0, VOCABULARY, (n, LENGTH))
    y = np.where(np.random.rand(n, LENGTH) < 0.2, -100, np.random.randint(0, VOCABULARY, (n, LENGTH)))
    return x, y


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_writes_history_validation_and_plot(tmp_path):
    model = tiny_model()
    optimizer = create_optimizer(1e-2, total_steps=6, warmup_steps=2)
    model.compile(optimizer=optimizer, loss=CausalLMLoss(), metrics=[Perplexity()])
    x, y = data(12)
    history = model.fit(
        x, y, batch_size=4, epochs=2, validation_data=data(4), shuffle=False,
        callbacks=[TrainingLogger(tmp_path / "run", every_n_steps=2)], verbose=0,
    )

    rows = read(tmp_path / "run" / "history.csv")
    assert list(rows[0]) == ["step", "epoch", "loss", "perplexity", "learning_rate", "gradient_norm"]
    assert [(int(r["step"]), int(r["epoch"])) for r in rows] == [(2, 0), (4, 1), (6, 1)]
    # The last row of an epoch holds Keras's epoch means, as the History does.
    np.testing.assert_allclose(float(rows[-1]["loss"]), history.history["loss"][-1], rtol=1e-5)
    np.testing.assert_allclose(float(rows[-1]["perplexity"]), history.history["perplexity"][-1], rtol=1e-5)
    # Learning rate at the optimizer's iteration after each logged step: warmup 2, cosine to 0.1x at 6.
    expected_lr = [1e-2 * ((0.9 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 4))) + 0.1) for s in (2, 4, 6)]
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], expected_lr, rtol=1e-5)
    norms = [float(r["gradient_norm"]) for r in rows]
    assert all(n > 0 for n in norms) and len(set(norms)) == 3

    validation = read(tmp_path / "run" / "validation.csv")
    assert list(validation[0]) == ["epoch", "step", "val_loss", "val_perplexity"]
    assert [int(r["step"]) for r in validation] == [3, 6]
    np.testing.assert_allclose([float(r["val_loss"]) for r in validation], history.history["val_loss"], rtol=1e-5)

    with open(tmp_path / "run" / "loss.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plain_keras_optimizer_leaves_gradient_norm_empty(tmp_path):
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=CausalLMLoss())
    x, y = data(8)
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[TrainingLogger(tmp_path, plot=False)], verbose=0)
    rows = read(tmp_path / "history.csv")
    assert len(rows) == 2
    assert [r["gradient_norm"] for r in rows] == ["", ""]
    assert float(rows[0]["learning_rate"]) == pytest.approx(0.1)
    assert not (tmp_path / "loss.png").exists() and not (tmp_path / "validation.csv").exists()


def test_config_round_trip_and_validation(tmp_path):
    logger = TrainingLogger(str(tmp_path), every_n_steps=5, plot=False)
    assert TrainingLogger.from_config(logger.get_config()).get_config() == logger.get_config()
    with pytest.raises(ValueError, match="every_n_steps"):
        TrainingLogger(str(tmp_path), every_n_steps=0)
