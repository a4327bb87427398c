import numpy as np
from keras import ops

from kerasllm.losses import sparse_cross_entropy


def test_per_token_loss_and_mask_match_numpy():
    logits = np.random.randn(2, 3, 6).astype("float32")
    labels = np.array([[1, -100, 5], [0, 2, -100]])
    loss, mask = sparse_cross_entropy(labels, logits)
    x = logits.astype("float64")
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    expected = -np.take_along_axis(logp, np.where(labels < 0, 0, labels)[..., None], -1)[..., 0]
    expected[labels < 0] = 0.0
    assert ops.convert_to_numpy(loss).dtype == np.float32
    np.testing.assert_allclose(ops.convert_to_numpy(loss), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(ops.convert_to_numpy(mask), labels != -100)


def test_custom_ignore_index_and_trailing_label_axis():
    logits = np.zeros((1, 2, 4), "float32")
    loss, mask = sparse_cross_entropy(np.array([[[3], [0]]]), logits, ignore_index=0)
    np.testing.assert_allclose(ops.convert_to_numpy(loss), [[np.log(4), 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(ops.convert_to_numpy(mask), [[True, False]])


def test_large_logits_stay_finite():
    logits = np.array([[[1e4, -1e4, 0.0]]], "float32")
    loss, _ = sparse_cross_entropy(np.array([[1]]), logits)
    np.testing.assert_allclose(ops.convert_to_numpy(loss), [[2e4]], rtol=1e-6)
