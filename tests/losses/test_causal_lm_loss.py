import keras
import numpy as np
import pytest
from keras import ops

from kerasllm.losses import IGNORE_INDEX
from kerasllm.losses import CausalLMLoss
from kerasllm.losses import MaskedLMLoss

B, T, V = 3, 5, 7


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def numpy_token_loss(labels, logits, label_smoothing=0.0):
    logp = log_softmax(logits.astype("float64"))
    safe = np.where(labels == IGNORE_INDEX, 0, labels)
    nll = -np.take_along_axis(logp, safe[..., None], -1)[..., 0]
    smooth = -logp.mean(-1)
    loss = (1 - label_smoothing) * nll + label_smoothing * smooth
    return np.where(labels == IGNORE_INDEX, 0.0, loss)


def make_batch():
    logits = np.random.randn(B, T, V).astype("float32") * 3
    labels = np.random.randint(0, V, (B, T))
    labels[0, -2:] = IGNORE_INDEX
    labels[2, :3] = IGNORE_INDEX
    return labels, logits


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weight_shape", [None, (B,), (B, T)])
def test_matches_numpy_mean_over_counted_tokens(label_smoothing, weight_shape):
    labels, logits = make_batch()
    weights = None if weight_shape is None else np.random.uniform(0.2, 2.0, weight_shape).astype("float32")
    loss = CausalLMLoss(label_smoothing=label_smoothing)(labels, logits, sample_weight=weights)

    per_token = numpy_token_loss(labels, logits, label_smoothing)
    w = np.ones((B, T)) if weights is None else np.broadcast_to(weights.reshape(B, -1), (B, T))
    expected = (per_token * w).sum() / (labels != IGNORE_INDEX).sum()
    np.testing.assert_allclose(ops.convert_to_numpy(loss), expected, rtol=1e-5)


def test_other_reductions():
    labels, logits = make_batch()
    per_token = numpy_token_loss(labels, logits)
    np.testing.assert_allclose(
        ops.convert_to_numpy(CausalLMLoss(reduction="sum")(labels, logits)), per_token.sum(), rtol=1e-5
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(CausalLMLoss(reduction="none")(labels, logits)), per_token, rtol=1e-5, atol=1e-6
    )


def test_all_labels_ignored_gives_zero_not_nan():
    logits = np.random.randn(B, T, V).astype("float32")
    labels = np.full((B, T), IGNORE_INDEX)
    loss = float(ops.convert_to_numpy(CausalLMLoss()(labels, logits)))
    assert loss == 0.0


def test_bfloat16_logits_computed_in_float32():
    labels, logits = make_batch()
    bf16 = ops.cast(logits, "bfloat16")
    loss = CausalLMLoss()(labels, bf16)
    assert ops.convert_to_numpy(loss).dtype == np.float32
    rounded = ops.convert_to_numpy(ops.cast(bf16, "float32"))
    expected = numpy_token_loss(labels, rounded).sum() / (labels != IGNORE_INDEX).sum()
    np.testing.assert_allclose(ops.convert_to_numpy(loss), expected, rtol=1e-5)


def test_gradient_matches_softmax_minus_one_hot():
    # One SGD step on a Dense layer: W1 = W0 - lr * x^T (softmax - onehot) / number_of_counted_tokens.
    d, lr = 4, 0.5
    x = np.random.randn(B, T, d).astype("float32")
    labels, _ = make_batch()
    inputs = keras.Input((T, d))
    model = keras.Model(inputs, keras.layers.Dense(V, name="head")(inputs))
    kernel0, bias0 = [ops.convert_to_numpy(w).astype("float64") for w in model.get_layer("head").weights]
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=CausalLMLoss())
    model.fit(x, labels, batch_size=B, epochs=1, shuffle=False, verbose=0)

    logits = x.astype("float64") @ kernel0 + bias0
    probs = np.exp(log_softmax(logits))
    one_hot = np.eye(V)[np.where(labels == IGNORE_INDEX, 0, labels)]
    mask = (labels != IGNORE_INDEX)[..., None]
    dlogits = (probs - one_hot) * mask / mask.sum()
    grad_kernel = np.einsum("btd,btv->dv", x, dlogits)
    grad_bias = dlogits.sum((0, 1))
    kernel1, bias1 = [ops.convert_to_numpy(w) for w in model.get_layer("head").weights]
    np.testing.assert_allclose(kernel1, kernel0 - lr * grad_kernel, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bias1, bias0 - lr * grad_bias, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [CausalLMLoss, MaskedLMLoss])
def test_config_round_trip(cls):
    loss = cls(ignore_index=-1, label_smoothing=0.2, reduction="sum", name="my_loss")
    config = loss.get_config()
    restored = cls.from_config(config)
    assert restored.get_config() == config
    assert (restored.ignore_index, restored.label_smoothing, restored.reduction, restored.name) == (
        -1, 0.2, "sum", "my_loss"
    )
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is cls and again.get_config() == config


def test_masked_lm_loss_default_name_and_same_math():
    labels, logits = make_batch()
    assert MaskedLMLoss().name == "masked_lm_loss" and CausalLMLoss().name == "causal_lm_loss"
    np.testing.assert_allclose(
        ops.convert_to_numpy(MaskedLMLoss()(labels, logits)),
        ops.convert_to_numpy(CausalLMLoss()(labels, logits)),
        rtol=1e-6,
    )


def test_invalid_label_smoothing():
    with pytest.raises(ValueError, match="label_smoothing"):
        CausalLMLoss(label_smoothing=1.0)
