import keras
import numpy as np
import pytest
from keras import ops

from kerasllm.losses import CausalLMLoss
from kerasllm.optimizers import AdamW

B, T, D, V = 4, 3, 5, 6


def numpy_head_gradients(x, labels, kernel, bias):
    """Gradients of the mean counted-token cross-entropy of `x @ kernel + bias` (the `CausalLMLoss`)."""
    logits = x.astype("float64") @ kernel + bias
    logits = logits - logits.max(-1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    mask = (labels != -100)[..., None]
    dlogits = (probs - np.eye(V)[np.where(mask[..., 0], labels, 0)]) * mask / mask.sum()
    return np.einsum("btd,btv->dv", x, dlogits), dlogits.sum((0, 1))


def head_model():
    inputs = keras.Input((T, D))
    return keras.Model(inputs, keras.layers.Dense(V, name="head")(inputs))


def batch():
    labels = np.random.randint(0, V, (B, T))
    labels[0, 0] = -100
    return np.random.randn(B, T, D).astype("float32"), labels


def weights(model):
    return [ops.convert_to_numpy(w).astype("float64") for w in model.get_layer("head").weights]


@pytest.mark.parametrize("global_clipnorm", [None, 0.05])
def test_gradient_norm_matches_hand_computed_norm_in_fit(global_clipnorm):
    model = head_model()
    optimizer = AdamW(learning_rate=0.1, weight_decay=0.1, global_clipnorm=global_clipnorm)
    model.compile(optimizer=optimizer, loss=CausalLMLoss())
    assert optimizer.gradient_norm is None
    norms = []
    for _ in range(2):  # two compiled train steps; the second starts from updated weights
        x, labels = batch()
        grads = numpy_head_gradients(x, labels, *weights(model))
        model.fit(x, labels, batch_size=B, epochs=1, verbose=0)
        expected = np.sqrt(sum((g**2).sum() for g in grads))
        norms.append(float(ops.convert_to_numpy(optimizer.gradient_norm)))
        np.testing.assert_allclose(norms[-1], expected, rtol=1e-5)
    assert norms[0] != norms[1]
    assert int(ops.convert_to_numpy(optimizer.iterations)) == 2
    assert "gradient_norm" in [v.name for v in optimizer.variables]


def test_gradient_norm_with_gradient_accumulation_is_norm_of_the_averaged_update():
    model = head_model()
    optimizer = AdamW(learning_rate=0.1, gradient_accumulation_steps=2)
    model.compile(optimizer=optimizer, loss=CausalLMLoss())
    (x1, y1), (x2, y2) = batch(), batch()
    start = weights(model)
    model.fit(np.concatenate([x1, x2]), np.concatenate([y1, y2]), batch_size=B, shuffle=False, verbose=0)
    g1, g2 = numpy_head_gradients(x1, y1, *start), numpy_head_gradients(x2, y2, *start)
    expected = np.sqrt(sum((((a + b) / 2) ** 2).sum() for a, b in zip(g1, g2)))
    np.testing.assert_allclose(float(ops.convert_to_numpy(optimizer.gradient_norm)), expected, rtol=1e-5)


def test_clipping_and_update_match_keras_adamw():
    variables_ours = [keras.Variable(np.random.randn(3, 2).astype("float32"), name="kernel")]
    variables_keras = [keras.Variable(ops.convert_to_numpy(variables_ours[0].value), name="kernel")]
    grads = [ops.convert_to_tensor(np.random.randn(3, 2).astype("float32") * 10)]
    ours = AdamW(learning_rate=0.1, weight_decay=0.1, global_clipnorm=0.5)
    theirs = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.1, global_clipnorm=0.5)
    for _ in range(2):
        ours.apply(grads, variables_ours)
        theirs.apply(grads, variables_keras)
    np.testing.assert_allclose(
        ops.convert_to_numpy(variables_ours[0].value), ops.convert_to_numpy(variables_keras[0].value), rtol=1e-6
    )
    np.testing.assert_allclose(
        float(ops.convert_to_numpy(ours.gradient_norm)), np.linalg.norm(ops.convert_to_numpy(grads[0])), rtol=1e-5
    )


def test_no_decay_matches_paths_case_insensitively():
    kept = keras.Variable(np.ones((2,), "float32"), name="scale")  # no layer, path "scale"
    inputs = keras.Input((4,), dtype="int32")
    hidden = keras.layers.Embedding(5, 3, name="tok")(inputs)
    hidden = keras.layers.LayerNormalization(name="Final_Norm")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))
    variables = model.trainable_variables + [kept]
    optimizer = AdamW(learning_rate=0.5, weight_decay=0.2, no_decay=("norm", "embedding", "bias"))
    before = [ops.convert_to_numpy(v.value).copy() for v in variables]
    optimizer.apply([ops.zeros(v.shape) for v in variables], variables)
    for variable, old in zip(variables, before):
        new = ops.convert_to_numpy(variable.value)
        decayed = variable.path in ("head/kernel", "scale")
        np.testing.assert_allclose(new, old * (1 - 0.5 * 0.2) if decayed else old, rtol=1e-6, err_msg=variable.path)


def test_config_round_trip_keeps_every_argument():
    optimizer = AdamW(
        learning_rate=0.01,
        weight_decay=0.3,
        beta_1=0.8,
        beta_2=0.9,
        epsilon=1e-6,
        amsgrad=True,
        global_clipnorm=2.0,
        use_ema=True,
        ema_momentum=0.9,
        gradient_accumulation_steps=3,
        no_decay=("bias",),
        name="opt",
    )
    config = optimizer.get_config()
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is AdamW
    assert restored.get_config() == config
    assert config["no_decay"] == ["bias"] and config["amsgrad"] is True and config["beta_2"] == 0.9
