import keras
import numpy as np
import pytest
from keras import ops

from kerasllm.callbacks import Distillation
from kerasllm.losses import IGNORE_INDEX
from kerasllm.losses import CausalLMLoss
from kerasllm.losses import DistillationLoss
from kerasllm.losses import distillation
from kerasllm.models import CausalLM

V, T, N = 37, 8, 16


def tiny(width=16, layers=2, vocabulary_size=V, **kwargs):
    return CausalLM(
        vocabulary_size=vocabulary_size, num_layers=layers, num_heads=2, hidden_dim=width,
        intermediate_dim=2 * width, max_sequence_length=16, **kwargs,
    )


def data():
    x = np.random.randint(0, V, (N, T)).astype("int32")
    y = np.random.randint(0, V, (N, T)).astype("int32")
    y[:4, -3:] = IGNORE_INDEX
    return x, y


def jit(xla=False):
    # kerasllm turns XLA on for TensorFlow; its compile time dominates these tiny runs, so only the
    # tests that pass `xla=True` pay for it. "auto" is what users get (JAX compiles, torch does not).
    return "auto" if xla or keras.backend.backend() != "tensorflow" else False


def compiled_student(lr=0.5, xla=False, **kwargs):
    student = tiny(width=8, layers=1, **kwargs)
    student.compile(optimizer=keras.optimizers.SGD(lr), loss=CausalLMLoss(), jit_compile=jit(xla))
    return student


def numpy_weights(model):
    return [np.array(w) for w in model.get_weights()]


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "mse"])
def test_each_kind_trains_reports_both_losses_and_leaves_teacher_alone(kind):
    teacher, student = tiny(), compiled_student(xla=kind == "forward_kl")
    x, y = data()
    before = numpy_weights(teacher)
    history = student.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, y),
                          callbacks=[Distillation(teacher, loss=kind, alpha=0.3)]).history
    for key in ("loss", "distillation_loss", "label_loss", "val_distillation_loss", "val_label_loss"):
        assert key in history and np.isfinite(history[key][0]), key
    # With equal batches the total is the alpha mix of the two running means.
    np.testing.assert_allclose(
        history["loss"][0], 0.3 * history["distillation_loss"][0] + 0.7 * history["label_loss"][0], rtol=1e-4
    )
    after = numpy_weights(teacher)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert teacher.trainable


def test_student_moves_towards_the_teacher():
    teacher = tiny()
    student = tiny(width=8, layers=1)
    student.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CausalLMLoss(),
                    jit_compile=jit())
    x, y = data()

    def divergence():
        return float(ops.convert_to_numpy(distillation.forward_kl(teacher(x), student(x))))

    start = divergence()
    history = student.fit(x, y, batch_size=8, epochs=4, verbose=0,
                          callbacks=[Distillation(teacher, temperature=1.0, alpha=1.0)]).history
    assert divergence() < 0.5 * start
    assert history["distillation_loss"][-1] < history["distillation_loss"][0]


def test_alpha_one_ignores_labels_and_equals_the_distillation_gradient():
    teacher = tiny()
    x, y = data()
    other_labels = np.where(y == IGNORE_INDEX, IGNORE_INDEX, (y + 1) % V)  # same ignored positions
    full_labels = np.random.randint(0, V, y.shape).astype("int32")  # nothing ignored
    init = compiled_student().get_weights()
    runs = []
    for labels in (y, other_labels, full_labels):
        student = compiled_student(lr=0.5)
        student.set_weights(init)
        student.fit(x, labels, batch_size=N, epochs=1, verbose=0, shuffle=False,
                    callbacks=[Distillation(teacher, loss="reverse_kl", temperature=2.0, alpha=1.0)])
        runs.append(numpy_weights(student))
    assert any(not np.allclose(a, b) for a, b in zip(init, runs[0]))
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_allclose(a, b, atol=1e-6)

    # The same SGD step through Keras's own loss path: DistillationLoss compiled, teacher logits as
    # targets, every token counted (as with `full_labels`).
    manual = tiny(width=8, layers=1)
    manual.compile(optimizer=keras.optimizers.SGD(0.5), loss=DistillationLoss("reverse_kl", temperature=2.0),
                   jit_compile=jit())
    manual.set_weights(init)
    manual.fit(x, ops.convert_to_numpy(teacher(x)), batch_size=N, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(numpy_weights(manual), runs[2]):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_alpha_zero_is_plain_training():
    teacher = tiny()
    x, y = data()
    plain = compiled_student()
    init = plain.get_weights()
    plain.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    distilled = compiled_student()
    distilled.set_weights(init)
    distilled.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
                  callbacks=[Distillation(teacher, alpha=0.0)])
    for a, b in zip(numpy_weights(plain), numpy_weights(distilled)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_schedules_reach_the_compiled_step():
    teacher, student = tiny(), compiled_student()
    x, y = data()
    history = student.fit(
        x, y, batch_size=4, epochs=2, verbose=0,
        callbacks=[Distillation(teacher, temperature=lambda step: 1.0 + step, alpha=lambda step: step / 10)],
    ).history
    # Four batches per epoch: the last batch of each epoch is step 3, then step 7.
    np.testing.assert_allclose(history["distillation_temperature"], [4.0, 8.0])
    np.testing.assert_allclose(history["distillation_alpha"], [0.3, 0.7], rtol=1e-6)


def test_student_is_plain_after_fit_and_trains_without_teacher():
    teacher, student = tiny(), compiled_student()
    x, y = data()
    student.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Distillation(teacher)])
    assert "compute_loss" not in vars(student)
    assert [m.name for m in student.metrics] == ["loss"]
    history = student.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert sorted(history) == ["loss"]


def test_saved_student_is_plain_and_reloads_in_a_fresh_process(tmp_path, run_in_fresh_process):
    teacher, student = tiny(width=24), compiled_student()
    x, y = data()
    student.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Distillation(teacher, alpha=0.5)])
    path = str(tmp_path / "student.keras")
    student.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", ops.convert_to_numpy(student(x)))
    out = run_in_fresh_process(
        "import numpy as np, keras, kerasllm\n"
        f"m = keras.saving.load_model({path!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r}); expected = np.load({str(tmp_path / 'expected.npy')!r})\n"
        "np.testing.assert_allclose(keras.ops.convert_to_numpy(m(x)), expected, atol=1e-5)\n"
        "print(type(m).__name__, len(m.weights), sum(int(np.prod(w.shape)) for w in m.weights))\n"
    )
    name, count, size = out.split()
    assert name == "CausalLM"
    assert int(count) == len(student.weights)
    assert int(size) == sum(int(np.prod(w.shape)) for w in student.weights)


def test_lower_precision_teacher():
    teacher = tiny(dtype="mixed_bfloat16")
    student = compiled_student()
    x, y = data()
    history = student.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Distillation(teacher)]).history
    assert np.isfinite(history["distillation_loss"][0])


def test_dict_inputs_mask_padding_and_ignored_labels():
    teacher, student = tiny(), compiled_student(lr=0.0)  # no update: the logged loss is the exact one
    x, y = data()
    padding = np.ones_like(x, dtype=bool)
    padding[:, -2:] = False
    inputs = {"token_ids": x, "padding_mask": padding}
    history = student.fit(inputs, y, batch_size=N, epochs=1, verbose=0, shuffle=False,
                          callbacks=[Distillation(teacher, alpha=1.0, temperature=1.0)]).history
    mask = padding & (y != IGNORE_INDEX)
    expected = distillation.forward_kl(teacher(inputs), student(inputs), mask=mask)
    np.testing.assert_allclose(history["distillation_loss"][0], ops.convert_to_numpy(expected), rtol=1e-4)
    unmasked = distillation.forward_kl(teacher(inputs), student(inputs))
    assert not np.isclose(history["distillation_loss"][0], ops.convert_to_numpy(unmasked), rtol=1e-4)


def test_top_k_in_fit():
    teacher, x = tiny(), data()[0]
    y = np.random.randint(0, V, x.shape).astype("int32")
    logged, init = {}, compiled_student().get_weights()
    for top_k in (None, V, 5):
        student = compiled_student(lr=0.0)  # no update: the logged loss is the exact one
        student.set_weights(init)
        logged[top_k] = student.fit(x, y, batch_size=N, epochs=1, verbose=0, callbacks=[
            Distillation(teacher, loss="jsd", alpha=1.0, top_k=top_k)]).history["distillation_loss"][0]
    np.testing.assert_allclose(logged[V], logged[None], rtol=1e-5)
    expected = distillation.jsd(teacher(x), student(x), temperature=2.0, top_k=5)
    np.testing.assert_allclose(logged[5], ops.convert_to_numpy(expected), rtol=1e-4)


def test_vocabulary_mismatch_is_a_clear_error():
    teacher, student = tiny(vocabulary_size=V + 3), compiled_student()
    x, y = data()
    with pytest.raises(ValueError, match=f"teacher has {V + 3} tokens and the student {V}"):
        student.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Distillation(teacher)])


def test_unbuilt_teacher_is_a_clear_error():
    teacher = keras.Sequential([keras.layers.Embedding(V, 4), keras.layers.Dense(V)])
    student = compiled_student()
    x, y = data()
    with pytest.raises(ValueError, match="not built"):
        student.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Distillation(teacher)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(loss="kl"), "Unknown distillation loss"),
        (dict(temperature=0.0), "temperature"),
        (dict(alpha=1.5), "alpha"),
        (dict(beta=2.0), "beta"),
        (dict(loss=3), "loss"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Distillation(tiny(), **kwargs)


def test_bad_scheduled_value_and_recovery_from_a_failed_fit():
    teacher, student = tiny(), compiled_student()
    x, y = data()
    with pytest.raises(ValueError, match="alpha"):
        student.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Distillation(teacher, alpha=lambda s: 2.0)])
    assert teacher.trainable and "compute_loss" not in vars(student)
    # A fit that raises mid-way never reaches on_train_end; the next Distillation unwraps first.
    with pytest.raises(ValueError, match="alpha"):
        student.fit(x, y, batch_size=4, epochs=1, verbose=0,
                    callbacks=[Distillation(teacher, alpha=lambda s: 0.5 if s < 2 else 2.0)])
    history = student.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Distillation(teacher)]).history
    assert sorted(history) == ["distillation_loss", "label_loss", "loss"]
    assert teacher.trainable and "compute_loss" not in vars(student)
    assert [m.name for m in student.metrics] == ["loss"]


def test_loss_object_supplies_kind_beta_and_temperature():
    callback = Distillation(tiny(), loss=DistillationLoss("jsd", temperature=3.0, beta=0.2))
    assert (callback.kind, callback.temperature, callback.beta) == ("jsd", 3.0, 0.2)
    callback = Distillation(tiny(), loss=DistillationLoss("jsd", temperature=3.0), temperature=1.5)
    assert callback.temperature == 1.5


def test_keras_hub_gpt2_teacher():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=V, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16
    )
    teacher = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    student = compiled_student(lr=1.0, xla=True)
    x, y = data()
    before = numpy_weights(teacher)
    history = student.fit(x, y, batch_size=8, epochs=3, verbose=0,
                          callbacks=[Distillation(teacher, temperature=1.0, alpha=1.0)]).history
    assert history["distillation_loss"][-1] < history["distillation_loss"][0]
    assert all(np.array_equal(a, b) for a, b in zip(before, numpy_weights(teacher)))
