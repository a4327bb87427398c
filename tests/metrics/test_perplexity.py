import keras
import numpy as np
import pytest
from keras import ops

from kerasllm.metrics import Perplexity


def numpy_nll(labels, logits):
    x = logits.astype("float64")
    logp = x - x.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, np.where(labels < 0, 0, labels)[..., None], -1)[..., 0]


def batches(n=3, b=2, t=4, v=9):
    for _ in range(n):
        labels = np.random.randint(0, v, (b, t))
        labels[np.random.rand(b, t) < 0.35] = -100
        yield labels, np.random.randn(b, t, v).astype("float32") * 2


@pytest.mark.parametrize("weighted", [False, True])
def test_accumulates_exp_of_mean_nll_over_updates(weighted):
    metric = Perplexity()
    total, count = 0.0, 0.0
    for labels, logits in batches():
        weights = np.random.uniform(0.5, 2.0, labels.shape[:1]).astype("float32") if weighted else None
        metric.update_state(labels, logits, sample_weight=weights)
        w = (labels != -100) * (1.0 if weights is None else weights[:, None])
        total += (numpy_nll(labels, logits) * w).sum()
        count += w.sum()
    np.testing.assert_allclose(float(ops.convert_to_numpy(metric.result())), np.exp(total / count), rtol=1e-5)


def test_per_token_sample_weight():
    metric = Perplexity()
    labels, logits = next(batches())
    weights = np.random.uniform(0.0, 1.0, labels.shape).astype("float32")
    metric.update_state(labels, logits, sample_weight=weights)
    w = (labels != -100) * weights
    expected = np.exp((numpy_nll(labels, logits) * w).sum() / w.sum())
    np.testing.assert_allclose(float(ops.convert_to_numpy(metric.result())), expected, rtol=1e-5)


def test_reset_and_empty_state():
    metric = Perplexity()
    assert float(ops.convert_to_numpy(metric.result())) == 1.0
    labels, logits = next(batches())
    metric.update_state(labels, logits)
    assert float(ops.convert_to_numpy(metric.result())) > 1.0
    metric.reset_state()
    assert float(ops.convert_to_numpy(metric.result())) == 1.0
    metric.update_state(np.full((2, 3), -100), np.random.randn(2, 3, 5).astype("float32"))
    assert float(ops.convert_to_numpy(metric.result())) == 1.0


def test_bfloat16_logits():
    metric = Perplexity()
    labels, logits = next(batches())
    bf16 = ops.cast(logits, "bfloat16")
    metric.update_state(labels, bf16)
    rounded = ops.convert_to_numpy(ops.cast(bf16, "float32"))
    mask = labels != -100
    expected = np.exp(numpy_nll(labels, rounded)[mask].mean())
    np.testing.assert_allclose(float(ops.convert_to_numpy(metric.result())), expected, rtol=1e-5)


def test_config_round_trip():
    metric = Perplexity(ignore_index=0, name="ppl")
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert type(restored) is Perplexity
    assert restored.get_config() == metric.get_config()
    assert (restored.ignore_index, restored.name) == (0, "ppl")
