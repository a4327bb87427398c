"""Hidden-state MSE and MiniLM-v2 attention relations against numpy references."""

import numpy as np
import pytest
from keras import ops

from kerasllm.losses import feature_distillation


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_relations(states, heads, allowed):
    b, t, c = states.shape
    d = c // heads
    h = states.reshape(b, t, heads, d).transpose(0, 2, 1, 3)
    scores = h @ h.transpose(0, 1, 3, 2) / np.sqrt(d)
    scores = np.where(allowed, scores, -1e9)
    return _np_log_softmax(scores)


def _np_relation_kl(teacher, student, heads, mask, causal):
    b, t, _ = teacher.shape
    allowed = np.ones((b, 1, t, t), bool)
    if causal:
        allowed &= np.tril(np.ones((t, t), bool))[None, None]
    if mask is not None:
        allowed &= mask[:, None, None, :] | np.eye(t, dtype=bool)[None, None]
    lt, ls = _np_relations(teacher, heads, allowed), _np_relations(student, heads, allowed)
    per_query = (np.exp(lt) * (lt - ls)).sum(-1).mean(1)  # (B, T)
    if mask is None:
        return per_query.mean()
    return (per_query * mask).sum() / mask.sum()


def test_hidden_state_mse_matches_numpy_with_mask():
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(2, 5, 6)), rng.normal(size=(2, 5, 6))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    expected = (((s - t) ** 2).mean(-1) * mask).sum() / mask.sum()
    got = feature_distillation.hidden_state_mse(t.astype("float32"), s.astype("float32"), mask=mask)
    np.testing.assert_allclose(ops.convert_to_numpy(got), expected, rtol=1e-5)
    unmasked = feature_distillation.hidden_state_mse(t.astype("float32"), s.astype("float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(unmasked), ((s - t) ** 2).mean(), rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_mask", [False, True])
def test_attention_relation_kl_matches_numpy_across_widths(causal, use_mask):
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(2, 6, 12)).astype("float32")
    student = rng.normal(size=(2, 6, 8)).astype("float32")  # other width, same relation heads
    mask = np.array([[1, 1, 1, 1, 0, 0], [1] * 6], bool) if use_mask else None
    expected = _np_relation_kl(teacher, student, 4, mask, causal)
    got = feature_distillation.attention_relation_kl(teacher, student, 4, mask=mask, causal=causal)
    np.testing.assert_allclose(ops.convert_to_numpy(got), expected, rtol=1e-4, atol=1e-6)
    assert np.isfinite(ops.convert_to_numpy(got))


def test_attention_relation_kl_is_zero_for_identical_relations():
    states = np.random.default_rng(2).normal(size=(1, 4, 8)).astype("float32")
    got = feature_distillation.attention_relation_kl(states, states, 2, causal=True)
    assert abs(float(ops.convert_to_numpy(got))) < 1e-6


def test_padding_never_changes_the_losses():
    rng = np.random.default_rng(3)
    t, s = rng.normal(size=(1, 6, 8)).astype("float32"), rng.normal(size=(1, 6, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 0, 0]], bool)
    t2, s2 = t.copy(), s.copy()
    t2[:, 4:], s2[:, 4:] = 100.0, -100.0  # different padding content
    for fn in (
        lambda a, b: feature_distillation.hidden_state_mse(a, b, mask=mask),
        lambda a, b: feature_distillation.attention_relation_kl(a, b, 2, mask=mask, causal=True),
    ):
        np.testing.assert_allclose(ops.convert_to_numpy(fn(t, s)), ops.convert_to_numpy(fn(t2, s2)), rtol=1e-5)


def test_bad_inputs_name_the_problem():
    a = np.zeros((1, 4, 8), "float32")
    with pytest.raises(ValueError, match="same width"):
        feature_distillation.hidden_state_mse(a, np.zeros((1, 4, 6), "float32"))
    with pytest.raises(ValueError, match="axis 1"):
        feature_distillation.hidden_state_mse(a, np.zeros((1, 5, 8), "float32"))
    with pytest.raises(ValueError, match="must divide"):
        feature_distillation.attention_relation_kl(a, np.zeros((1, 4, 6), "float32"), 4)
    with pytest.raises(ValueError, match="positive integer"):
        feature_distillation.attention_relation_kl(a, a, 0)
