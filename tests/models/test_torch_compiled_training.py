"""`compile(jit_compile=True)` trains, evaluates and predicts like eager on every backend; on torch through
kerasllm's traced step (kerasllm/utils/backend_train_step.py): traced once per input shapes, never by Dynamo,
saved and reloaded like any model, and run eagerly, with a warning, where a step cannot be traced."""

import os
import warnings

import keras
import numpy as np
import pytest

import kerasllm
from kerasllm.models import CausalLM

TORCH = keras.backend.backend() == "torch"
torch_only = pytest.mark.skipif(not TORCH, reason="kerasllm traces the step itself only on torch")

CONFIG = dict(vocabulary_size=61, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)
# Compiled against eager: identical on torch (the same aten ops replayed); XLA (JAX, TensorFlow) fuses and
# reorders float arithmetic, and bfloat16 rounds coarsely, so there the runs agree to a tolerance.
# Inductor (which compiles a torch graph from its second call) fuses bfloat16 casts differently from eager:
# 4e-5 apart in the losses here.
TOLERANCE = {"float32": 1e-6 if TORCH else 1e-4, "mixed_bfloat16": 1e-3 if TORCH else 2e-2}


@pytest.fixture(autouse=True)
def _replay_traced_graphs(request, monkeypatch):
    # Inductor takes tens of seconds per graph on this CPU; the traced graph it compiles is what these
    # tests check, so only the tests marked `inductor` let it compile (from a graph's second call).
    from kerasllm.utils import backend_train_step

    if "inductor" not in request.keywords:
        monkeypatch.setattr(backend_train_step, "COMPILE_AFTER_CALLS", 10**9)


def data(samples=20, length=8, seed=0):
    ids = np.random.default_rng(seed).integers(0, CONFIG["vocabulary_size"], size=(samples, length + 1))
    return ids[:, :-1].astype("int32"), ids[:, 1:].astype("int32")


class BatchLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def compiled_model(jit_compile, dtype=None, optimizer=None):
    keras.utils.set_random_seed(0)
    model = CausalLM(**CONFIG, dtype=dtype)
    model.compile(optimizer=optimizer or keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  loss=kerasllm.losses.CausalLMLoss(), jit_compile=jit_compile)
    return model


def train(model, x, y, epochs=1, **kwargs):
    recorder = BatchLosses()
    history = model.fit(x, y, batch_size=4, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=[recorder, *kwargs.pop("callbacks", [])], **kwargs)
    return np.array(recorder.losses), history.history


# On JAX and TensorFlow `jit_compile=True` is Keras's own XLA step, which most training tests run already:
# float32 checks it here; mixed precision is checked for kerasllm's torch step only.
@pytest.mark.parametrize("dtype", ["float32", pytest.param("mixed_bfloat16", marks=[pytest.mark.inductor, torch_only])])
def test_compiled_fit_trains_like_eager(dtype):
    x, y = data(22)  # five batches of 4 and a last one of 2
    runs = []
    for jit_compile in (False, True):
        model = compiled_model(jit_compile, dtype=dtype)
        losses, history = train(model, x, y, epochs=2, validation_data=data(8, seed=1))
        runs.append((model, losses, history))
    (eager, eager_losses, eager_history), (compiled, compiled_losses, compiled_history) = runs
    assert len(compiled_losses) == 12
    tolerance = TOLERANCE[dtype]
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(compiled_history["val_loss"], eager_history["val_loss"], rtol=tolerance, atol=tolerance)
    for a, b in zip(compiled.get_weights(), eager.get_weights()):
        np.testing.assert_allclose(a, b, atol=10 * tolerance)
    assert int(keras.ops.convert_to_numpy(compiled.optimizer.iterations)) == 12
    assert eager_losses[-1] < eager_losses[0]


@torch_only
def test_torch_traces_once_per_input_shape_and_never_calls_dynamo():
    from torch._dynamo.utils import counters

    frames = counters["frames"]["total"]
    model = compiled_model(True)
    x, y = data(20)
    train(model, x, y, epochs=2)
    function = model.train_function
    assert len(function.graphs) == 1  # 10 steps, one trace
    train(model, x, y)
    assert model.train_function is function and len(function.graphs) == 1  # a second fit reuses it
    train(model, *data(22))  # a last batch of 2: one more input shape
    assert len(function.graphs) == 2
    model.evaluate(x, y, batch_size=4, verbose=0)
    model.evaluate(x, y, batch_size=4, verbose=0)
    assert len(model.test_function.graphs) == 1
    assert counters["frames"]["total"] == frames  # torch.compile's Dynamo never ran


def logits(model, x):
    return keras.ops.convert_to_numpy(model(x))


def test_predict_and_evaluate_follow_new_data_and_new_weights():
    model = compiled_model(True)
    x, y = data(8)
    other = data(8, seed=3)[0]
    for batch in (x, other):  # host arrays are inputs of the traced graph, not constants in it
        np.testing.assert_allclose(model.predict_on_batch(batch), logits(model, batch), atol=1e-5)
    model.set_weights([w * 0.5 for w in model.get_weights()])
    np.testing.assert_allclose(model.predict(other, batch_size=4, verbose=0), logits(model, other), atol=1e-5)
    expected = keras.ops.convert_to_numpy(model.compute_loss(x=x, y=y, y_pred=model(x)))
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=8, verbose=0), expected, rtol=1e-5)
    before = model.get_weights()
    model.train_on_batch(x, y)
    model.train_on_batch(other, y)  # a new batch of host arrays trains on its own tokens
    after_two = model.get_weights()
    model.set_weights(before)
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    assert max(np.abs(a - b).max() for a, b in zip(after_two, model.get_weights())) > 1e-6


def test_save_and_reload_after_compiled_training(tmp_path):
    model = compiled_model(True)
    x, y = data(16)
    train(model, x, y)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert reloaded.jit_compile is True
    # Both continue from the same weights and optimizer state, compiled: the same next losses.
    next_losses = [train(m, *data(16, seed=5))[0] for m in (model, reloaded)]
    np.testing.assert_allclose(next_losses[1], next_losses[0], rtol=1e-5)


def test_callback_that_rebuilds_the_step_trains_like_eager():
    # Pruning registers its masks after the first traced step and rebuilds the step; masks update on schedule.
    x, y = data(24)
    runs = []
    for jit_compile in (False, True):
        model = compiled_model(jit_compile)
        pruning = kerasllm.callbacks.Pruning(0.5, frequency=2, end_step=4, strip_on_train_end=False)
        losses, _ = train(model, x, y, callbacks=[pruning])
        runs.append((losses, model.get_weights()))
    (eager_losses, eager_weights), (compiled_losses, compiled_weights) = runs
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=TOLERANCE["float32"], atol=TOLERANCE["float32"])
    for a, b in zip(compiled_weights, eager_weights):
        np.testing.assert_allclose(a, b, atol=1e-3)


@torch_only
def test_an_untraceable_step_runs_eagerly_with_a_warning():
    # Gradient accumulation chooses its branch with `keras.ops.cond`, which reads a tensor on torch.
    x, y = data(16)
    runs = []
    for jit_compile in (False, True):
        model = compiled_model(jit_compile, optimizer=keras.optimizers.AdamW(1e-2, gradient_accumulation_steps=2))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses, _ = train(model, x, y)
        runs.append((losses, [str(w.message) for w in caught if "jit_compile=True" in str(w.message)]))
    (eager_losses, eager_warnings), (compiled_losses, compiled_warnings) = runs
    assert not eager_warnings
    assert len(compiled_warnings) == 1 and "runs eagerly" in compiled_warnings[0]
    assert "keras/src/ops/core.py" in compiled_warnings[0]  # where the step read a tensor
    np.testing.assert_array_equal(compiled_losses, eager_losses)


@torch_only
def test_an_error_of_the_step_itself_is_raised_without_a_tracing_warning():
    x, _ = data(8)
    labels = np.zeros((8, 3), "int32")  # the wrong length
    with pytest.raises(Exception) as eager_error:
        compiled_model(False).train_on_batch(x, labels)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(eager_error.type) as compiled_error:
        warnings.simplefilter("always")
        compiled_model(True).train_on_batch(x, labels)
    assert str(compiled_error.value) == str(eager_error.value)
    assert not [w for w in caught if "jit_compile=True" in str(w.message)]
