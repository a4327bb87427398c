"""Checkpoint: atomic saves, exact resume after SIGKILL (also during a save), damaged files."""

import json
import os
import random
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

import kerasllm
from kerasllm.callbacks.checkpoint import COMPLETE_FILE, WEIGHTS_FILE

# One training run: tiny CausalLM with dropout (so RNG state matters), AdamW with warmup and decay
# (so the iteration counter matters), a shuffled LanguageModelingDataset of 6 batches, 2 epochs.
# argv: directory, output .npz, kill_after_step (0: none), kill_during_save_step (0: none).
TRAIN_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import keras, numpy as np
    import kerasllm
    import kerasllm.callbacks.checkpoint as checkpoint_module

    keras.config.disable_interactive_logging()
    directory, output, kill_after, kill_in_save = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    keras.utils.set_random_seed(0)
    ids = np.random.default_rng(0).integers(0, 11, size=6 * 2 * 9 + 3)
    data = kerasllm.data.LanguageModelingDataset(ids, sequence_length=8, batch_size=2, seed=5)
    model = kerasllm.models.CausalLM(vocabulary_size=11, num_layers=1, num_heads=2, hidden_dim=8,
                                     intermediate_dim=16, max_sequence_length=8, dropout=0.2)
    model.compile(optimizer=kerasllm.optimizers.create_optimizer(1e-2, total_steps=12, warmup_steps=3),
                  loss=kerasllm.losses.CausalLMLoss())
    guard = kerasllm.callbacks.NonFiniteGuard(verbose=False)
    checkpoint = kerasllm.callbacks.Checkpoint(directory, every_n_steps=1, keep=2, dataset=data,
                                               callbacks=[guard])

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if checkpoint.step == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    savez = np.savez
    def savez_then_maybe_die(path, **arrays):
        savez(path, **arrays)
        # Weights and optimizer state are in the temporary folder; the RNG file is half written.
        if checkpoint.step == kill_in_save and path.endswith("optimizer.npz"):
            with open(path.replace("optimizer.npz", "rng.npz"), "wb") as f:
                f.write(b"PK\\x03\\x04 half")
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint_module.np.savez = savez_then_maybe_die

    model.fit(data, epochs=2, shuffle=False, verbose=0, callbacks=[guard, checkpoint, Kill()])
    np.savez(output, step=checkpoint.step, iterations=int(model.optimizer.iterations),
             restored=str(checkpoint.restored_from), **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    """
)


def _train(tmp_path, directory, kill_after=0, kill_in_save=0):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    output = tmp_path / f"out-{kill_after}-{kill_in_save}.npz"
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(
        [sys.executable, str(script), str(directory), str(output), str(kill_after), str(kill_in_save)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    killed = kill_after or kill_in_save
    if killed:
        assert result.returncode == -9, result.stderr[-3000:]
        return None
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(output))


@pytest.mark.parametrize("seed", [0])
def test_killed_and_resumed_run_ends_with_the_uninterrupted_weights(tmp_path, seed):
    picker = random.Random(seed)
    kill_after = picker.randint(2, 5)  # mid first epoch (6 batches per epoch)
    kill_in_save = picker.randint(kill_after + 2, 11)  # during the save of a later step
    reference = _train(tmp_path, tmp_path / "reference")
    assert reference["step"] == 12 and reference["iterations"] == 12

    directory = tmp_path / "interrupted"
    _train(tmp_path, directory, kill_after=kill_after)
    assert [os.path.basename(p) for p in kerasllm.callbacks.Checkpoint.checkpoints(directory)][-1] == (
        f"step-{kill_after:06d}"
    )
    _train(tmp_path, directory, kill_in_save=kill_in_save)
    # The kill during the save left a temporary folder, and the previous checkpoint complete.
    assert any(name.startswith(".tmp-step-") for name in os.listdir(directory))
    assert kerasllm.callbacks.Checkpoint.latest(directory)["step"] == kill_in_save - 1
    resumed = _train(tmp_path, directory)
    assert str(resumed["restored"]).endswith(f"step-{kill_in_save - 1:06d}")
    assert not any(name.startswith(".tmp-") for name in os.listdir(directory))
    assert resumed["step"] == 12 and resumed["iterations"] == 12
    names = [k for k in reference if k.startswith("w")]
    assert len(names) > 0
    for name in names:
        # Bitwise: the same ops on the same values in the same order, on CPU.
        np.testing.assert_array_equal(resumed[name], reference[name], err_msg=f"kill after {kill_after}, "
                                      f"in save {kill_in_save}")


def _tiny_run(directory, **checkpoint_kwargs):
    keras.utils.set_random_seed(0)
    ids = np.random.default_rng(0).integers(0, 11, size=4 * 2 * 9 + 1)
    data = kerasllm.data.LanguageModelingDataset(ids, sequence_length=8, batch_size=2, seed=1)
    model = kerasllm.models.CausalLM(vocabulary_size=11, num_layers=1, num_heads=2, hidden_dim=8,
                                     intermediate_dim=16, max_sequence_length=8)
    model.compile(optimizer="adam", loss=kerasllm.losses.CausalLMLoss())
    checkpoint = kerasllm.callbacks.Checkpoint(directory, dataset=data, **checkpoint_kwargs)
    model.fit(data, epochs=1, steps_per_epoch=None, shuffle=False, verbose=0, callbacks=[checkpoint])
    return model, checkpoint, data


def test_checkpoint_folder_contents_and_keep(tmp_path):
    model, checkpoint, data = _tiny_run(tmp_path, every_n_steps=1, keep=2)
    folders = kerasllm.callbacks.Checkpoint.checkpoints(tmp_path)
    assert [os.path.basename(f) for f in folders] == ["step-000003", "step-000004"]
    names = sorted(os.listdir(folders[-1]))
    assert names == sorted([COMPLETE_FILE, WEIGHTS_FILE, "optimizer.npz", "rng.npz", "state.json"])
    state = kerasllm.callbacks.Checkpoint.latest(tmp_path)
    # Step 4 ends the 4-batch epoch: a resume starts the next epoch at batch 0. (Keras calls the
    # dataset's `on_epoch_end` once before training too, so its epoch count is read, not assumed.)
    assert (state["step"], state["epoch"], state["batch"], state["dataset_epoch"]) == (4, 1, 0, data.epoch)
    with open(os.path.join(folders[-1], COMPLETE_FILE)) as f:
        assert set(json.load(f)) == set(names) - {COMPLETE_FILE}


def test_resume_restores_state_and_positions_the_data(tmp_path):
    model, checkpoint, data = _tiny_run(tmp_path, every_n_steps=3, keep=3, save_on_train_end=False)
    assert kerasllm.callbacks.Checkpoint.latest(tmp_path)["step"] == 3
    final_weights = [np.array(w) for w in model.get_weights()]
    # A second run with the same callback continues at step 3: epoch 0, batch 3 -> one batch left.
    model2, checkpoint2, data2 = _tiny_run(tmp_path, every_n_steps=100, keep=3, save_on_train_end=False)
    assert checkpoint2.restored_from.endswith("step-000003")
    assert checkpoint2.step == 4
    assert int(model2.optimizer.iterations) == 4
    for a, b in zip(model2.get_weights(), final_weights):
        np.testing.assert_array_equal(a, b)
    assert data2.start_batch == 0 and data2.epoch == data.epoch


def test_damaged_checkpoint_names_the_file_and_resume_falls_back(tmp_path):
    _tiny_run(tmp_path, every_n_steps=1, keep=3, save_on_train_end=False)
    newest = kerasllm.callbacks.Checkpoint.checkpoints(tmp_path)[-1]
    weights = os.path.join(newest, WEIGHTS_FILE)
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(kerasllm.callbacks.CheckpointError, match=r"model\.weights\.h5.*truncated"):
        kerasllm.callbacks.checkpoint.read_state(newest)
    with pytest.warns(UserWarning, match="step-000004.*model.weights.h5"):
        assert kerasllm.callbacks.Checkpoint.latest(tmp_path)["step"] == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, checkpoint, _ = _tiny_run(tmp_path, every_n_steps=100, save_on_train_end=False)
    assert checkpoint.restored_from.endswith("step-000003")
    assert any("Falling back" in str(w.message) and "model.weights.h5" in str(w.message) for w in caught)


def test_truncated_keras_file_gives_an_error_naming_it(tmp_path):
    model = kerasllm.models.CausalLM(vocabulary_size=11, num_layers=1, num_heads=2, hidden_dim=8,
                                     intermediate_dim=16, max_sequence_length=8)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = kerasllm.utils.load_model(path)
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)
    with pytest.raises(ValueError, match="model.keras.*damaged"):
        kerasllm.utils.load_model(path)
    with pytest.raises(ValueError, match="No model file"):
        kerasllm.utils.load_model(str(tmp_path / "missing.keras"))


def test_atomic_directory_leaves_nothing_on_error(tmp_path):
    from kerasllm.utils.atomic import atomic_directory

    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "out") as temp:
            open(os.path.join(temp, "a"), "w").close()
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    for content in ("first", "second"):  # replacing an existing folder
        with atomic_directory(tmp_path / "out") as temp:
            with open(os.path.join(temp, "a"), "w") as f:
                f.write(content)
    assert os.listdir(tmp_path) == ["out"]
    assert open(tmp_path / "out" / "a").read() == "second"


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="every_n_steps"):
        kerasllm.callbacks.Checkpoint("x", every_n_steps=0)
    with pytest.raises(ValueError, match="set_position"):
        kerasllm.callbacks.Checkpoint("x", dataset=[1, 2])
    with pytest.raises(ValueError, match="get_state"):
        kerasllm.callbacks.Checkpoint("x", callbacks=[keras.callbacks.Callback()])


def test_datasets_resume_at_a_batch_position():
    ids = np.random.default_rng(0).integers(0, 11, size=5 * 2 * 9 + 1)
    make = {
        "lm": lambda: kerasllm.data.LanguageModelingDataset(ids, sequence_length=8, batch_size=2, seed=3),
        "mlm": lambda: kerasllm.data.MaskedLanguageModelingDataset(
            ids, sequence_length=8, batch_size=2, mask_token_id=10, vocabulary_size=11, seed=3),
    }
    for kind, build in make.items():
        full = build()
        full.on_epoch_end()
        full.on_epoch_end()  # epoch 2
        resumed = build()
        resumed.set_position(2, 3)
        assert len(resumed) == 2 and resumed.batches_per_epoch == 5 == len(full)
        for i in range(2):
            for a, b in zip(resumed[i], full[3 + i]):
                np.testing.assert_array_equal(a, b, err_msg=kind)
        resumed.on_epoch_end()
        assert (resumed.epoch, resumed.start_batch, len(resumed)) == (3, 0, 5)
        with pytest.raises(ValueError, match="batch"):
            resumed.set_position(0, 5)
