import csv
import math

import keras
import numpy as np
import pytest

import kerasllm
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


# --- resume through a Checkpoint ----------------------------------------------------------------


def _resumable_run(root, stop_at=None, logger_first=True):
    """A 2-epoch run of 4 batches each, checkpointed every 4 steps; `stop_at` ends it like a crash."""
    keras.utils.set_random_seed(0)
    ids = np.random.default_rng(0).integers(0, 11, size=4 * 2 * 9 + 1)
    data = kerasllm.data.LanguageModelingDataset(ids, sequence_length=8, batch_size=2, seed=1)
    validation = kerasllm.data.LanguageModelingDataset(ids[:19], sequence_length=8, batch_size=2, shuffle=False)
    model = kerasllm.models.CausalLM(vocabulary_size=11, num_layers=1, num_heads=2, hidden_dim=8,
                                     intermediate_dim=16, max_sequence_length=8)
    model.compile(optimizer=create_optimizer(1e-2, total_steps=8, warmup_steps=2), loss=CausalLMLoss())
    logger = TrainingLogger(root / "logs", plot=False)
    # No save at the end of a stopped run: the run "dies" after `stop_at`, 2 steps past the checkpoint.
    checkpoint = kerasllm.callbacks.Checkpoint(root / "checkpoints", every_n_steps=4, dataset=data,
                                               callbacks=[logger], save_on_train_end=stop_at is None)

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if checkpoint.step == stop_at:
                self.model.stop_training = True

    callbacks = [logger, checkpoint] if logger_first else [checkpoint, logger]
    model.fit(data, validation_data=validation, epochs=2, shuffle=False, verbose=0,
              callbacks=[*callbacks, Stop()])
    return read(root / "logs" / "history.csv"), read(root / "logs" / "validation.csv")


_STRAIGHT = {}


def _straight_run(tmp_path_factory):
    if "run" not in _STRAIGHT:  # the uninterrupted reference, shared by both orders
        _STRAIGHT["run"] = _resumable_run(tmp_path_factory.mktemp("straight"))
    return _STRAIGHT["run"]


@pytest.mark.parametrize("logger_first", [True, False])
def test_resumed_run_continues_the_history_without_duplicates(tmp_path, tmp_path_factory, logger_first):
    history, validation = _straight_run(tmp_path_factory)
    assert [int(r["step"]) for r in history] == list(range(1, 9))

    stopped, _ = _resumable_run(tmp_path / "resumed", stop_at=6, logger_first=logger_first)
    assert [int(r["step"]) for r in stopped] == list(range(1, 7))  # rows 5, 6 come after the checkpoint
    saved = kerasllm.callbacks.Checkpoint.latest(str(tmp_path / "resumed" / "checkpoints"))
    assert saved["step"] == 4 and list(saved["callbacks"].values()) == [{"step": 4}]

    resumed, resumed_validation = _resumable_run(tmp_path / "resumed", logger_first=logger_first)
    # Rows 1..8 exactly once: 5 and 6 of the stopped run were dropped and written again.
    assert [int(r["step"]) for r in resumed] == list(range(1, 9))
    assert [int(r["epoch"]) for r in resumed] == [int(r["epoch"]) for r in history] == [0] * 4 + [1] * 4
    assert list(resumed[0]) == list(history[0])
    for got, expected in zip(resumed[:4], history[:4]):  # written before the interruption, kept as is
        assert got == expected
    # The checkpoint at step 4 closes epoch 0, so the resumed epoch 1 starts its running means afresh,
    # as the uninterrupted one did: with the exact resume every logged value matches.
    for column in ("loss", "learning_rate", "gradient_norm"):
        np.testing.assert_allclose([float(r[column]) for r in resumed[4:]],
                                   [float(r[column]) for r in history[4:]], rtol=1e-5, err_msg=column)
    assert [(int(r["epoch"]), int(r["step"])) for r in resumed_validation] == [(0, 4), (1, 8)]
    np.testing.assert_allclose(float(resumed_validation[-1]["val_loss"]), float(validation[-1]["val_loss"]),
                               rtol=1e-5)


def test_state_round_trip_and_fresh_run_overwrites(tmp_path):
    logger = TrainingLogger(tmp_path, plot=False)
    assert logger.get_state() == {"step": 0}
    logger.set_state({"step": 7})
    assert logger.get_state() == {"step": 7}
    model = tiny_model()
    model.compile(optimizer="sgd", loss=CausalLMLoss())
    x, y = data(8)
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[logger], verbose=0)
    # The restored step continues; no earlier file existed, so the file starts at step 8.
    assert [int(r["step"]) for r in read(tmp_path / "history.csv")] == [8, 9]
    fresh = TrainingLogger(tmp_path, plot=False)
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[fresh], verbose=0)
    assert [int(r["step"]) for r in read(tmp_path / "history.csv")] == [1, 2]
