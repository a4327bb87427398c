import numpy as np
import pytest

from kerasllm.models.sampling import select_next_tokens, validate_sampling


def test_greedy_and_zero_temperature_take_argmax():
    logits = np.array([[0.1, 3.0, 0.2], [5.0, 0.0, 1.0]])
    rng = np.random.default_rng(0)
    assert list(select_next_tokens(logits, rng, greedy=True)) == [1, 0]
    assert list(select_next_tokens(logits, rng, temperature=0)) == [1, 0]


def test_top_k_and_top_p_restrict_the_support():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 2000))
    assert set(select_next_tokens(logits, rng, top_k=2)) == {0, 1}
    assert set(select_next_tokens(logits, rng, top_p=0.7)) == {0, 1}
    counts = np.bincount(select_next_tokens(logits, rng), minlength=4) / 2000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.04)


def test_bad_sampling_arguments():
    with pytest.raises(ValueError):
        validate_sampling(-1, None, None)
    with pytest.raises(ValueError):
        validate_sampling(1.0, 0, None)
    with pytest.raises(ValueError):
        validate_sampling(1.0, None, 1.5)
