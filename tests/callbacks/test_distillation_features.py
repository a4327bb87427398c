"""Feature, attention-relation and on-policy distillation through the Distillation callback."""

import keras
import numpy as np
import pytest
from keras import ops

from kerasllm.callbacks import Distillation
from kerasllm.distillation.callback_helpers import block_map
from kerasllm.distillation.layer_outputs import LayerOutputRecorder
from kerasllm.distillation.on_policy import continuation_mask
from kerasllm.distillation.on_policy import sample_continuations
from kerasllm.losses import CausalLMLoss
from kerasllm.losses import distillation
from kerasllm.losses import feature_distillation
from kerasllm.models import CausalLM
from kerasllm.models import MaskedLM

V, T, N = 29, 8, 8


def tiny(width, layers, cls=CausalLM):
    return cls(vocabulary_size=V, num_layers=layers, num_heads=2, hidden_dim=width, intermediate_dim=2 * width,
               max_sequence_length=16)


def data():
    rng = np.random.default_rng(0)
    return rng.integers(0, V, (N, T)).astype("int32"), rng.integers(0, V, (N, T)).astype("int32")


def compiled(model, optimizer):
    # XLA on TensorFlow costs more compile time than these tiny steps are worth.
    model.compile(optimizer=optimizer, loss=CausalLMLoss(),
                  jit_compile=False if keras.backend.backend() == "tensorflow" else "auto")
    return model


def built(model):
    model(np.zeros((1, T), "int32"))
    return model


class Probe(keras.callbacks.Callback):
    """Copies the projections' weights when training begins (after Distillation made them)."""

    def __init__(self, distillation_callback):
        super().__init__()
        self.callback = distillation_callback

    def on_train_begin(self, logs=None):
        self.initial = [np.array(p.kernel) for p in self.callback._projections]


def states(model, x, layers):
    recorder = LayerOutputRecorder(layers)
    recorder.start()
    logits = model(x, training=False)
    outputs = {k: ops.convert_to_numpy(recorder.pop(k)) for k in layers}
    recorder.stop()
    return ops.convert_to_numpy(logits), outputs


def test_default_block_map_matches_every_kth_teacher_block():
    assert block_map("hidden_states", 2, 4) == [(0, 1), (1, 3)]
    assert block_map("hidden_states", 3, 12) == [(0, 3), (1, 7), (2, 11)]
    assert block_map({0: -1, -1: 0}, 2, 4) == [(0, 3), (1, 0)]


def test_features_and_attention_train_projections_and_leave_a_plain_student(tmp_path):
    teacher = built(tiny(16, 4))
    student = compiled(built(tiny(8, 2)), keras.optimizers.AdamW(1e-2))
    student.optimizer.build(student.trainable_variables)
    x, y = data()
    weights_before, optimizer_before = len(student.weights), len(student.optimizer.variables)
    teacher_before = [np.array(w) for w in teacher.get_weights()]
    callback = Distillation(teacher, features="hidden_states", attention=True, relation_heads=2)
    probe = Probe(callback)
    history = student.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[callback, probe]).history
    for key in ("feature_loss", "attention_loss", "distillation_loss", "label_loss"):
        assert np.all(np.isfinite(history[key])), key
    # The projections learned; the teacher did not.
    assert all(not np.allclose(a, np.array(p.kernel)) for a, p in zip(probe.initial, callback._projections))
    assert all(np.array_equal(a, b) for a, b in zip(teacher_before, teacher.get_weights()))
    # A plain student with its own optimizer again: no projection, no projection slot.
    assert len(student.weights) == weights_before
    assert len(student.optimizer.variables) == optimizer_before
    assert int(student.optimizer.iterations) == 4
    assert not any("distillation" in v.path for v in student.weights + student.optimizer.variables)
    path = str(tmp_path / "student.keras")
    student.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        ops.convert_to_numpy(reloaded(x)), ops.convert_to_numpy(student(x)), rtol=1e-5, atol=1e-5
    )


def test_logged_feature_and_attention_losses_equal_a_reference():
    teacher = built(tiny(16, 4))
    student = compiled(built(tiny(8, 2)), keras.optimizers.SGD(0.0))  # weights stay put
    x, y = data()
    callback = Distillation(teacher, alpha=0.0, features={0: 1, 1: 3}, attention=True, relation_heads=2)
    probe = Probe(callback)
    history = student.fit(x, y, batch_size=N, epochs=1, verbose=0, callbacks=[callback, probe]).history

    s_blocks, t_blocks = student.backbone.blocks, teacher.backbone.blocks
    s_layers = {"h0": s_blocks[0], "h1": s_blocks[1]}
    t_layers = {"h0": t_blocks[1], "h1": t_blocks[3]}
    for part in ("query", "key", "value"):
        s_layers[part] = getattr(s_blocks[-1].attention, part)
        t_layers[part] = getattr(t_blocks[-1].attention, part)
    _, s = states(student, x, s_layers)
    _, t = states(teacher, x, t_layers)
    feature = np.mean([((s[h] @ w - t[h]) ** 2).mean() for h, w in zip(("h0", "h1"), probe.initial)])
    np.testing.assert_allclose(history["feature_loss"][0], feature, rtol=1e-4)
    attention = sum(
        float(ops.convert_to_numpy(feature_distillation.attention_relation_kl(t[p], s[p], 2, causal=True)))
        for p in ("query", "key", "value")
    )
    np.testing.assert_allclose(history["attention_loss"][0], attention, rtol=1e-4)
    np.testing.assert_allclose(
        history["loss"][0], history["label_loss"][0] + feature + attention, rtol=1e-4
    )


def test_sample_continuations_keep_the_prompt_and_follow_the_model():
    model = built(tiny(8, 1))
    x, _ = data()
    noise = np.random.default_rng(1).uniform(1e-6, 1.0, (N, T - 3, V)).astype("float32")
    samples = ops.convert_to_numpy(sample_continuations(model, x, 3, noise, temperature=1e-4))
    np.testing.assert_array_equal(samples[:, :3], x[:, :3])
    greedy = x.copy()
    for t in range(3, T):  # at a near-zero temperature the sample is the argmax
        greedy[:, t] = ops.convert_to_numpy(model(greedy, training=False))[:, t - 1].argmax(-1)
    np.testing.assert_array_equal(samples, greedy)
    mask = ops.convert_to_numpy(continuation_mask(2, T, 3))
    np.testing.assert_array_equal(mask[0], [False, False, True, True, True, True, True, False])


def test_on_policy_rows_are_the_students_continuations_scored_by_the_teacher():
    teacher = built(tiny(16, 2))
    student = compiled(built(tiny(8, 1)), keras.optimizers.SGD(0.0))
    x, y = data()
    callback = Distillation(teacher, alpha=1.0, temperature=1.0, on_policy_fraction=0.5,
                            on_policy_prompt_length=3, on_policy_temperature=1e-4, seed=3)
    history = student.fit(x, y, batch_size=N, epochs=1, verbose=0, shuffle=False, callbacks=[callback]).history

    rows = x[: N // 2].copy()
    for t in range(3, T):  # the student's own greedy continuation of the first half of the batch
        rows[:, t] = ops.convert_to_numpy(student(rows, training=False))[:, t - 1].argmax(-1)
    expected = distillation.forward_kl(teacher(rows), student(rows), mask=continuation_mask(N // 2, T, 3))
    np.testing.assert_allclose(history["on_policy_loss"][0], float(ops.convert_to_numpy(expected)), rtol=1e-4)
    off_policy = distillation.forward_kl(teacher(x), student(x))
    np.testing.assert_allclose(
        history["distillation_loss"][0],
        0.5 * float(ops.convert_to_numpy(off_policy)) + 0.5 * history["on_policy_loss"][0],
        rtol=1e-4,
    )


def test_bad_feature_and_on_policy_settings_are_clear_errors():
    teacher = built(tiny(16, 4))
    x, y = data()
    cases = [
        (dict(features={0: 9}), "not a teacher block"),
        (dict(features={}), "empty mapping"),
        (dict(attention=True, relation_heads=3), "relation_heads"),
    ]
    for kwargs, message in cases:
        student = compiled(built(tiny(8, 2)), keras.optimizers.SGD(0.1))
        with pytest.raises(ValueError, match=message):
            student.fit(x, y, epochs=1, verbose=0, callbacks=[Distillation(teacher, **kwargs)])
    short_teacher = CausalLM(vocabulary_size=V, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
                             max_sequence_length=T - 2)
    short_teacher(np.zeros((1, T - 2), "int32"))
    student = compiled(built(tiny(8, 2)), keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="teacher reads at most 6"):
        student.fit(x, y, epochs=1, verbose=0, callbacks=[Distillation(short_teacher)])
    with pytest.raises(ValueError, match="'hidden_states'"):
        Distillation(teacher, features="everything")
    with pytest.raises(ValueError, match="feature_weight"):
        Distillation(teacher, feature_weight=-1.0)
    with pytest.raises(ValueError, match="on_policy_fraction"):
        Distillation(teacher, on_policy_fraction=1.5)
    masked = compiled(built(tiny(8, 2, cls=MaskedLM)), keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="causal student"):
        masked.fit(x, y, epochs=1, verbose=0,
                   callbacks=[Distillation(built(tiny(16, 2, cls=MaskedLM)), on_policy_fraction=0.5)])
    plain_teacher = keras.Sequential([keras.layers.Embedding(V, 4), keras.layers.Dense(V)])
    plain_teacher.build((None, T))
    student = compiled(built(tiny(8, 2)), keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="kerasllm models"):
        student.fit(x, y, epochs=1, verbose=0, callbacks=[Distillation(plain_teacher, features="hidden_states")])


def test_distillation_and_ewc_in_one_fit_leave_the_model_its_own_loss():
    from kerasllm.callbacks import ElasticWeightConsolidation

    teacher = built(tiny(16, 2))
    x, y = data()
    for order in ("distillation first", "ewc first"):
        student = compiled(built(tiny(8, 1)), keras.optimizers.SGD(0.1))
        distill = Distillation(teacher, alpha=0.5)
        ewc = ElasticWeightConsolidation([(x[:4], y[:4])], strength=1.0)
        callbacks = [distill, ewc] if order == "distillation first" else [ewc, distill]
        history = student.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=callbacks).history
        assert {"ewc_penalty", "distillation_loss", "label_loss"} <= set(history), order
        assert "compute_loss" not in vars(student), order
        assert not any(m.name in ("ewc_penalty", "distillation_loss") for m in student.metrics), order
