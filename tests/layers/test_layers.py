"""Layer shapes, masks and numerics against NumPy references (run on every backend)."""

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm


def np_(x):
    return ops.convert_to_numpy(x)


def numpy_attention(x, layer, padding_mask=None, causal=True):
    """Reference multi-head attention with grouped-query heads in NumPy float64."""
    x = x.astype(np.float64)
    B, T, _ = x.shape
    N, K, H = layer.num_heads, layer.num_key_value_heads, layer.head_dim

    def project(dense, heads):
        out = x @ np_(dense.kernel).astype(np.float64)
        if dense.use_bias:
            out = out + np_(dense.bias)
        return out.reshape(B, T, heads, H)

    q, k, v = project(layer.query, N), project(layer.key, K), project(layer.value, K)
    if layer.use_rotary:
        q, k = numpy_rope(q), numpy_rope(k)
    k = np.repeat(k, N // K, axis=2)
    v = np.repeat(v, N // K, axis=2)
    scores = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(H)
    allowed = np.ones((B, 1, T, T), bool)
    if causal:
        allowed &= np.tril(np.ones((T, T), bool))[None, None]
    if padding_mask is not None:
        allowed &= padding_mask[:, None, None, :].astype(bool) | np.eye(T, dtype=bool)[None, None]
    scores = np.where(allowed, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bnts,bsnh->btnh", weights, v).reshape(B, T, N * H)
    out = out @ np_(layer.output_dense.kernel)
    if layer.use_bias:
        out = out + np_(layer.output_dense.bias)
    return out


def numpy_rope(x, start=0, wavelength=10000.0):
    T, H = x.shape[1], x.shape[-1]
    half = H // 2
    inv = 1.0 / wavelength ** (np.arange(half) / half)
    angles = np.outer(np.arange(T) + start, inv)
    angles = np.concatenate([angles, angles], -1)[None, :, None, :]
    rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * np.cos(angles) + rotated * np.sin(angles)


@pytest.mark.parametrize("num_kv_heads, rotary, bias", [(4, False, True), (2, True, False), (1, True, True)])
def test_self_attention_matches_numpy(num_kv_heads, rotary, bias):
    layer = kerasllm.layers.SelfAttention(
        num_heads=4, hidden_dim=16, num_key_value_heads=num_kv_heads, use_rotary=rotary, use_bias=bias,
        kernel_initializer="glorot_uniform",
    )
    x = np.random.normal(size=(2, 6, 16)).astype("float32")
    out = np_(layer(x))
    assert out.shape == (2, 6, 16)
    np.testing.assert_allclose(out, numpy_attention(x, layer), atol=2e-5, rtol=1e-4)


def test_self_attention_padding_mask_matches_numpy_and_ignores_padded_keys():
    layer = kerasllm.layers.SelfAttention(num_heads=2, hidden_dim=8, causal=False, kernel_initializer="glorot_uniform")
    x = np.random.normal(size=(2, 5, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    out = np_(layer(x, padding_mask=mask))
    np.testing.assert_allclose(out, numpy_attention(x, layer, mask, causal=False), atol=2e-5, rtol=1e-4)
    # Changing what sits in the padded positions changes nothing for the real tokens.
    x2 = x.copy()
    x2[0, 3:] = 100.0
    out2 = np_(layer(x2, padding_mask=mask))
    np.testing.assert_allclose(out2[0, :3], out[0, :3], atol=1e-5)


def test_fully_padded_rows_stay_finite():
    layer = kerasllm.layers.SelfAttention(num_heads=2, hidden_dim=8)
    x = np.random.normal(size=(1, 4, 8)).astype("float32")
    out = np_(layer(x, padding_mask=np.array([[0, 0, 1, 1]], bool)))
    assert np.isfinite(out).all()


def test_attention_is_causal():
    layer = kerasllm.layers.SelfAttention(num_heads=2, hidden_dim=8, kernel_initializer="glorot_uniform")
    x = np.random.normal(size=(1, 6, 8)).astype("float32")
    out = np_(layer(x))
    x2 = x.copy()
    x2[0, 4] += 5.0
    out2 = np_(layer(x2))
    np.testing.assert_allclose(out2[0, :4], out[0, :4], atol=1e-6)
    assert np.abs(out2[0, 4:] - out[0, 4:]).max() > 1e-3


def test_grouped_query_heads_must_divide():
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        kerasllm.layers.SelfAttention(num_heads=4, hidden_dim=16, num_key_value_heads=3)


def test_rotary_embedding_matches_numpy_and_start_index():
    x = np.random.normal(size=(2, 5, 3, 8)).astype("float32")
    rope = kerasllm.layers.RotaryEmbedding()
    np.testing.assert_allclose(np_(rope(x)), numpy_rope(x), atol=1e-5)
    np.testing.assert_allclose(np_(rope(x, start_index=7)), numpy_rope(x, start=7), atol=1e-5)


def test_rotary_preserves_relative_positions():
    q = np.random.normal(size=(1, 1, 1, 8)).astype("float32")
    k = np.random.normal(size=(1, 1, 1, 8)).astype("float32")
    rope = kerasllm.layers.RotaryEmbedding()
    dot = lambda a, b: float((np_(rope(q, start_index=a)) * np_(rope(k, start_index=b))).sum())
    assert dot(3, 1) == pytest.approx(dot(12, 10), abs=1e-4)


def test_position_embedding_slices_table():
    layer = kerasllm.layers.PositionEmbedding(max_sequence_length=10, hidden_dim=4)
    out = np_(layer(np.zeros((2, 3, 4), "float32"), start_index=2))
    np.testing.assert_allclose(out[0], np_(layer.position_embeddings)[2:5])


def test_token_embedding_tied_head_matches_numpy():
    layer = kerasllm.layers.TokenEmbedding(vocabulary_size=11, hidden_dim=4)
    ids = np.array([[1, 2, 10]])
    hidden = np_(layer(ids))
    table = np_(layer.embeddings)
    np.testing.assert_allclose(hidden[0], table[[1, 2, 10]])
    logits = np_(layer(hidden, reverse=True))
    np.testing.assert_allclose(logits, hidden @ table.T, atol=1e-6)


@pytest.mark.parametrize("activation", ["gelu", "swiglu", "relu"])
def test_feed_forward_matches_numpy(activation):
    layer = kerasllm.layers.FeedForward(hidden_dim=6, intermediate_dim=10, activation=activation,
                                        kernel_initializer="glorot_uniform")
    x = np.random.normal(size=(2, 3, 6)).astype("float32")
    out = np_(layer(x))
    dense = lambda d, v: v @ np_(d.kernel) + np_(d.bias)
    h = dense(layer.intermediate, x)
    if activation == "swiglu":
        g = dense(layer.gate, x)
        h = g / (1 + np.exp(-g)) * h
    elif activation == "gelu":
        h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    else:
        h = np.maximum(h, 0)
    np.testing.assert_allclose(out, dense(layer.output_dense, h), atol=1e-5, rtol=1e-4)


def test_unknown_activation_and_normalization():
    with pytest.raises(ValueError, match="Unknown activation"):
        kerasllm.layers.FeedForward(4, 8, activation="tanh")
    with pytest.raises(ValueError, match="Unknown normalization"):
        kerasllm.layers.DecoderBlock(hidden_dim=8, num_heads=2, intermediate_dim=16, normalization="batchnorm")


def test_decoder_block_cache_matches_full_pass():
    block = kerasllm.layers.DecoderBlock(hidden_dim=8, num_heads=2, intermediate_dim=16, num_key_value_heads=1,
                                         use_rotary=True, normalization="rmsnorm", activation="swiglu")
    x = np.random.normal(size=(2, 5, 8)).astype("float32")
    full = np_(block(x))
    cache = ops.zeros((2, 2, 5, 1, 4))
    first, cache = block(x[:, :3], cache=cache, cache_index=0)
    rest = [np_(first)]
    for t in range(3, 5):
        out, cache = block(x[:, t:t + 1], cache=cache, cache_index=t)
        rest.append(np_(out))
    np.testing.assert_allclose(np.concatenate(rest, axis=1), full, atol=1e-5)


def test_encoder_block_is_bidirectional():
    block = kerasllm.layers.EncoderBlock(hidden_dim=8, num_heads=2, intermediate_dim=16,
                                         kernel_initializer="glorot_uniform")
    x = np.random.normal(size=(1, 4, 8)).astype("float32")
    x2 = x.copy()
    x2[0, 3] += np.random.normal(size=8).astype("float32") * 3
    assert np.abs(np_(block(x2))[0, 0] - np_(block(x))[0, 0]).max() > 1e-3
    decoder = kerasllm.layers.DecoderBlock.from_config(block.get_config())
    decoder.build((1, 4, 8))
    decoder.set_weights(block.get_weights())
    np.testing.assert_allclose(np_(decoder(x2))[0, 0], np_(decoder(x))[0, 0], atol=1e-6)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: kerasllm.layers.TokenEmbedding(10, 4),
        lambda: kerasllm.layers.PositionEmbedding(10, 4),
        lambda: kerasllm.layers.RotaryEmbedding(500.0),
        lambda: kerasllm.layers.SelfAttention(num_heads=2, hidden_dim=8, num_key_value_heads=1, use_rotary=True),
        lambda: kerasllm.layers.FeedForward(8, 16, activation="swiglu"),
        lambda: kerasllm.layers.DecoderBlock(hidden_dim=8, num_heads=2, intermediate_dim=16),
        lambda: kerasllm.layers.EncoderBlock(hidden_dim=8, num_heads=2, intermediate_dim=16, normalization="rmsnorm"),
    ],
)
def test_layer_config_round_trip(layer):
    layer = layer()
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
