"""The options that pretrained families need (sliding windows, RoPE scaling, q/k norms, Gemma's and
BERT's choices), against NumPy references, and their configs through save and load."""

import math

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.layers.rotary_embedding import rope_inverse_frequencies


def np_(x):
    return ops.convert_to_numpy(x)


def numpy_rms(x, scale, epsilon):
    x = x.astype(np.float64)
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + epsilon) * scale


def numpy_rope(x, frequencies, start=0, attention_factor=1.0):
    half = x.shape[-1] // 2
    angles = np.outer(np.arange(x.shape[1]) + start, frequencies.astype(np.float64))
    angles = np.concatenate([angles, angles], -1)[None, :, None, :]
    rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return (x * np.cos(angles) + rotated * np.sin(angles)) * attention_factor


def numpy_attention(x, layer, frequencies):
    """Causal attention with a sliding window, q/k biases, q/k RMS norms and a query scale, in float64."""
    x = x.astype(np.float64)
    B, T, _ = x.shape
    N, K, H = layer.num_heads, layer.num_key_value_heads, layer.head_dim

    def project(dense, heads):
        out = x @ np_(dense.kernel)
        if dense.use_bias:
            out = out + np_(dense.bias)
        return out.reshape(B, T, heads, H)

    q, k, v = project(layer.query, N), project(layer.key, K), project(layer.value, K)
    q = numpy_rms(q, np_(layer.query_norm.scale), layer.qk_norm_epsilon)
    k = numpy_rms(k, np_(layer.key_norm.scale), layer.qk_norm_epsilon)
    q, k = numpy_rope(q, frequencies), numpy_rope(k, frequencies)
    k, v = np.repeat(k, N // K, axis=2), np.repeat(v, N // K, axis=2)
    scores = np.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(layer.query_pre_attn_scalar)
    t, s = np.arange(T)[:, None], np.arange(T)[None, :]
    allowed = (s <= t) & (s > t - layer.sliding_window)
    scores = np.where(allowed[None, None], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bnts,bsnh->btnh", weights, v).reshape(B, T, N * H)
    return out @ np_(layer.output_dense.kernel)


def randomize(layer, seed=0):
    rng = np.random.RandomState(seed)
    for variable in layer.weights:
        variable.assign(rng.normal(scale=0.3, size=variable.shape).astype("float32"))


def test_sliding_window_qk_norm_and_query_scale_match_numpy():
    layer = kerasllm.layers.SelfAttention(
        num_heads=4, hidden_dim=16, num_key_value_heads=2, head_dim=6, use_rotary=True, rope_max_wavelength=500.0,
        use_bias=False, qkv_bias=True, qk_norm="rmsnorm", sliding_window=3, query_pre_attn_scalar=10.0,
    )
    x = np.random.RandomState(1).normal(size=(2, 9, 16)).astype("float32")
    layer(x)
    randomize(layer)
    assert layer.output_dense.bias is None and layer.query.bias is not None
    frequencies, _ = rope_inverse_frequencies(6, 500.0)
    np.testing.assert_allclose(np_(layer(x)), numpy_attention(x, layer, frequencies), atol=1e-5, rtol=1e-4)
    # The window also holds with a padding mask and in cached decoding.
    mask = np.ones((2, 9), bool)
    np.testing.assert_allclose(np_(layer(x, padding_mask=mask)), np_(layer(x)), atol=1e-6)
    cache = ops.zeros((2, 2, 9, 2, 6))
    full = np_(layer(x))
    out, cache = layer(x[:, :4], cache=cache, cache_index=0)
    for position in range(4, 9):
        out, cache = layer(x[:, position : position + 1], cache=cache, cache_index=position)
        np.testing.assert_allclose(np_(out)[:, 0], full[:, position], atol=1e-5)



@pytest.mark.parametrize(
    "scaling",
    [
        {"rope_type": "linear", "factor": 4.0},
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 64},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
        {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 128, "beta_fast": 16,
         "beta_slow": 2, "mscale": 1.0, "mscale_all_dim": 0.5, "truncate": False},
    ],
    ids=["linear", "llama3", "yarn", "yarn-mscale"],
)
def test_rope_scaling_matches_transformers(scaling):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = transformers.LlamaConfig(
        hidden_size=256, num_attention_heads=4, max_position_embeddings=512,
        rope_parameters={"rope_theta": 50000.0, **scaling},
    )
    expected, expected_factor = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](config, "cpu")
    frequencies, factor = rope_inverse_frequencies(64, 50000.0, scaling)
    np.testing.assert_allclose(frequencies, expected.numpy(), rtol=1e-6)
    assert factor == pytest.approx(expected_factor, rel=1e-7)
    # The layer applies them (and yarn's factor to cos and sin).
    x = np.random.RandomState(0).normal(size=(1, 7, 2, 64)).astype("float32")
    rope = kerasllm.layers.RotaryEmbedding(50000.0, rope_scaling=scaling)
    np.testing.assert_allclose(np_(rope(x, start_index=300)), numpy_rope(x, frequencies, 300, factor), atol=2e-5)


def test_rms_norm_plus_one_matches_numpy():
    norm = kerasllm.layers.RMSNormalizationPlusOne(epsilon=1e-6)
    x = np.random.RandomState(0).normal(size=(2, 3, 8)).astype("float32")
    plain = keras.layers.RMSNormalization(epsilon=1e-6)
    np.testing.assert_allclose(np_(norm(x)), np_(plain(x)), atol=1e-6)  # scale starts at 0: a unit scale
    scale = np.random.RandomState(1).normal(size=8).astype("float32")
    norm.scale.assign(scale)
    np.testing.assert_allclose(np_(norm(x)), numpy_rms(x, 1 + scale, 1e-6), atol=1e-5)


@pytest.mark.parametrize("activation", ["gelu_exact", "geglu"])
def test_feed_forward_activations_match_numpy(activation):
    from scipy.special import erf

    layer = kerasllm.layers.FeedForward(hidden_dim=6, intermediate_dim=10, activation=activation, use_bias=False)
    x = np.random.RandomState(0).normal(size=(2, 3, 6)).astype("float32")
    layer(x)
    randomize(layer)
    up = x @ np_(layer.intermediate.kernel)
    if activation == "gelu_exact":
        hidden = 0.5 * up * (1 + erf(up / np.sqrt(2)))
    else:
        gate = x @ np_(layer.gate.kernel)
        hidden = 0.5 * gate * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate**3))) * up
    np.testing.assert_allclose(np_(layer(x)), hidden @ np_(layer.output_dense.kernel), atol=1e-5)


def test_post_norm_and_sandwich_blocks_compose_as_bert_and_gemma():
    x = np.random.RandomState(0).normal(size=(1, 5, 8)).astype("float32")
    post = kerasllm.layers.EncoderBlock(hidden_dim=8, num_heads=2, intermediate_dim=16, normalize_first=False)
    post(x)
    randomize(post)
    h = np_(post.attention_norm(x + np_(post.attention(x))))
    expected = np_(post.feedforward_norm(h + np_(post.feedforward(h))))
    np.testing.assert_allclose(np_(post(x)), expected, atol=1e-5)

    sandwich = kerasllm.layers.DecoderBlock(
        hidden_dim=8, num_heads=2, intermediate_dim=16, normalization="rmsnorm_plus_one", sandwich_norm=True,
    )
    sandwich(x)
    randomize(sandwich)
    h = x + np_(sandwich.post_attention_norm(sandwich.attention(sandwich.attention_norm(x))))
    expected = h + np_(sandwich.post_feedforward_norm(sandwich.feedforward(sandwich.feedforward_norm(h))))
    np.testing.assert_allclose(np_(sandwich(x)), expected, atol=1e-5)


GEMMA_LIKE = dict(
    vocabulary_size=61, num_layers=2, num_heads=2, num_key_value_heads=1, head_dim=6, hidden_dim=8,
    intermediate_dim=12, max_sequence_length=16, position_embedding="rotary", normalization="rmsnorm_plus_one",
    activation="geglu", use_bias=False, sliding_window=3, layer_types=["sliding_attention", "full_attention"],
    rope_scaling={"rope_type": "linear", "factor": 2.0}, sliding_rope_max_wavelength=100.0, qk_norm=True,
    query_pre_attn_scalar=5.0, embedding_scale=math.sqrt(8), sandwich_norm=True, final_logit_softcapping=3.0,
)
BERT_LIKE = dict(
    vocabulary_size=61, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=12, max_sequence_length=16,
    activation="gelu_exact", normalize_first=False, num_segments=2, embedding_norm=True, head_transform=True,
    head_bias=True,
)


@pytest.mark.parametrize("model_class, config", [
    (kerasllm.models.CausalLM, GEMMA_LIKE), (kerasllm.models.MaskedLM, BERT_LIKE),
], ids=["gemma-like", "bert-like"])
def test_models_with_every_option_save_and_reload_in_a_fresh_process(model_class, config, tmp_path,
                                                                     reload_in_fresh_process):
    model = model_class(**config)
    randomize(model)
    x = np.random.RandomState(0).randint(0, 61, size=(2, 10)).astype("int32")
    assert np.abs(np_(model(x))).max() <= (3.0 if config is GEMMA_LIKE else np.inf)  # soft-capped
    assert model_class.from_config(model.get_config()).get_config() == model.get_config()
    path = str(tmp_path / "model.keras")
    model.save(path)
    outputs, _ = reload_in_fresh_process({"model": path}, x)["model"]
    np.testing.assert_allclose(outputs, np_(model(x)), atol=1e-6)


def test_rope_layers_use_their_own_base():
    model = kerasllm.models.CausalLM(**GEMMA_LIKE)
    local, full = (block.attention.rotary for block in model.backbone.blocks)
    assert (local.max_wavelength, local.rope_scaling) == (100.0, None)
    assert (full.max_wavelength, full.rope_scaling) == (10000.0, {"rope_type": "linear", "factor": 2.0})
    assert [block.attention.sliding_window for block in model.backbone.blocks] == [3, None]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(sliding_window=0), "sliding_window"),
        (dict(layer_types=["sliding_attention"]), "layer_types"),
        (dict(layer_types=["local", "full_attention"]), "Unknown `layer_types`"),
        (dict(sliding_window=None), "sliding_window"),
        (dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "rope_type 'dynamic'"),
        (dict(rope_scaling={"rope_type": "linear"}), "needs"),
        (dict(rope_scaling={"rope_type": "linear", "factor": 2.0, "beta": 1}), "beta"),
        (dict(activation="swiglu", head_transform=True), "head_transform"),
    ],
)
def test_bad_options_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        kerasllm.models.CausalLM(**{**GEMMA_LIKE, **overrides})
