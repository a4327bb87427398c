"""KerasHub -> kerasllm conversion: identical logits and greedy continuations for every supported family,
clear refusals for what kerasllm cannot reproduce, on every backend.

Each KerasHub model is tiny and randomly initialized (no download), then every weight is redrawn, norm
scales and biases included, so that a wrong mapping, transpose, RoPE layout or epsilon shows in the logits.
Inputs are longer than the sliding windows; Gemma 3 has local and global layers.
"""

import functools

import keras
import numpy as np
import pytest
from keras import ops

from kerasllm.models import CausalLM, MaskedLM
from kerasllm.models.keras_hub import convert, convert_gemma3, convert_llama, from_keras_hub

keras_hub = pytest.importorskip("keras_hub")
# One worker builds each KerasHub model once (`converted` caches them); Gemma 3, the costliest, gets its own.
pytestmark = pytest.mark.xdist_group("keras_hub")
GEMMA3_WORKER = pytest.mark.xdist_group("gemma3")

M = keras_hub.models
V = 211  # a vocabulary that is a multiple of nothing
SEQUENCE = 12  # longer than the windows below (5)
NEW_TOKENS = 8
TOLERANCE = 1e-5
HEADS = dict(num_query_heads=4, num_key_value_heads=2, hidden_dim=32, intermediate_dim=64)

FAMILIES = {
    "gpt2": lambda: M.GPT2CausalLM(
        M.GPT2Backbone(V, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=64, max_sequence_length=24),
        preprocessor=None,
    ),
    "llama": lambda: M.LlamaCausalLM(M.LlamaBackbone(V, num_layers=2, **HEADS), preprocessor=None),
    "llama3": lambda: M.Llama3CausalLM(
        M.Llama3Backbone(
            V, num_layers=2, **HEADS, tie_word_embeddings=True, rope_max_wavelength=500,
            rope_frequency_adjustment_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
            rope_pretraining_sequence_length=64,
        ),
        preprocessor=None,
    ),
    "mistral": lambda: M.MistralCausalLM(
        M.MistralBackbone(V, num_layers=2, **HEADS, head_dim=12, sliding_window=5, rope_scaling_factor=2.0),
        preprocessor=None,
    ),
    "qwen2": lambda: M.QwenCausalLM(
        M.QwenBackbone(V, num_layers=2, **dict(HEADS, num_key_value_heads=1), tie_word_embeddings=False),
        preprocessor=None,
    ),
    "qwen3": lambda: M.Qwen3CausalLM(
        # Real Qwen3 checkpoints: 1e-6 in the block norms, while KerasHub's query/key norms use 1e-5.
        M.Qwen3Backbone(V, num_layers=2, **HEADS, head_dim=12, layer_norm_epsilon=1e-6, rope_scaling_factor=2.0),
        preprocessor=None,
    ),
    "gemma3": lambda: M.Gemma3CausalLM(
        backbone=M.Gemma3Backbone(
            V, image_size=16, num_layers=6, **HEADS, head_dim=12, use_post_ffw_norm=True,
            use_post_attention_norm=True, use_sliding_window_attention=True, sliding_window_size=5,
            final_logit_soft_cap=5.0, global_rope_scaling_factor=8.0,
        ),
        preprocessor=None,
    ),
}


def np_(x):
    return ops.convert_to_numpy(x)


def redraw_weights(model, seed=0):
    """Every weight of `model` away from its initial value: a mapping error cannot hide behind ones and zeros."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.name in ("gamma", "scale"):
            value = np_(variable.value) + rng.normal(0, 0.3, shape)
        elif variable.name in ("beta", "bias"):
            value = rng.normal(0, 0.3, shape)
        elif variable.name == "embeddings":
            value = rng.normal(0, 0.2, shape)  # keeps tied logits of order one
        else:  # kernels: large enough for sharp attention, so RoPE and window errors show
            value = rng.normal(0, 32**-0.5, shape)
        variable.assign(value.astype("float32"))


def hub_logits(task, ids):
    # `predict_on_batch` compiles the forward pass once per shape (JAX runs op by op otherwise, slowly);
    # on JAX it also donates the KerasHub weights' buffers, which must not be shared with the converted model.
    return np_(task.predict_on_batch({"token_ids": ids, "padding_mask": np.ones_like(ids)}))


def by_family(*names):
    """Test parameters, Gemma 3's in the worker that builds it."""
    return [pytest.param(name, marks=GEMMA3_WORKER) if name == "gemma3" else name for name in names]


@functools.cache
def converted(name):
    """`(KerasHub task, converted kerasllm model, token ids, KerasHub logits)` for a family, built once."""
    task = FAMILIES[name]()
    redraw_weights(task)
    model = from_keras_hub(CausalLM, task)
    ids = np.random.default_rng(1).integers(0, V, (2, SEQUENCE)).astype("int32")
    return task, model, ids, hub_logits(task, ids)


@pytest.mark.parametrize("name", by_family(*sorted(FAMILIES)))
def test_logits_match(name):
    _, model, ids, expected = converted(name)
    assert isinstance(model, CausalLM)
    difference = np.abs(np_(model(ids)) - expected).max()
    print(f"{name}: max |logits difference| {difference:.2e}")
    assert difference < TOLERANCE


# Cached decoding with sliding windows (Mistral), and local/global layers with their own RoPE (Gemma 3).
@pytest.mark.parametrize("name", by_family("gemma3", "mistral"))
def test_greedy_continuation_matches(name):
    task, model, ids, _ = converted(name)
    # KerasHub: one full forward pass per new token, on a fixed-length buffer (one compilation); causal
    # attention makes the logits at a position independent of the padding after it.
    buffer = np.zeros((len(ids), SEQUENCE + NEW_TOKENS), "int32")
    buffer[:, :SEQUENCE] = ids
    for position in range(SEQUENCE, SEQUENCE + NEW_TOKENS):
        buffer[:, position] = hub_logits(task, buffer)[:, position - 1].argmax(-1)
    generated = model.generate(ids, max_new_tokens=NEW_TOKENS, greedy=True)  # kerasllm: cached decoding
    np.testing.assert_array_equal(np.asarray(generated), buffer)


def test_a_backbone_converts_like_its_task():
    task, model, ids, _ = converted("llama3")
    from_backbone = from_keras_hub(CausalLM, task.backbone)
    np.testing.assert_array_equal(np_(from_backbone(ids)), np_(model(ids)))


def rebuilt(model, **changes):
    """`model` rebuilt from its config with `changes`, same weights."""
    other = CausalLM.from_config(dict(model.get_config(), **changes))
    other.set_weights(model.get_weights())
    return other


@pytest.mark.parametrize(
    "name, changes",
    [
        pytest.param("gemma3", dict(layer_norm_epsilon=1e-4), marks=GEMMA3_WORKER),
        pytest.param("gemma3", dict(sliding_rope_max_wavelength=None), marks=GEMMA3_WORKER),  # global base locally
        ("llama3", dict(rope_scaling=None)),
        ("mistral", dict(sliding_window=6)),
        ("qwen3", dict(qk_norm_epsilon=1e-6)),  # the query/key norms' own epsilon matters
    ],
)
def test_the_comparison_detects_a_deliberate_mismatch(name, changes):
    _, model, ids, expected = converted(name)
    assert np.abs(np_(rebuilt(model, **changes)(ids)) - expected).max() > 10 * TOLERANCE


@GEMMA3_WORKER
def test_a_converted_model_survives_save_and_load(tmp_path):
    _, model, ids, expected = converted("gemma3")
    model.save(tmp_path / "gemma3.keras")
    loaded = keras.saving.load_model(tmp_path / "gemma3.keras")
    assert np.abs(np_(loaded(ids)) - expected).max() < TOLERANCE


def test_dtype_defaults_to_the_keras_hub_models():
    backbone = M.GPT2Backbone(V, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=8,
                              dtype="mixed_bfloat16")
    assert from_keras_hub(CausalLM, backbone).dtype_policy.name == "mixed_bfloat16"
    assert from_keras_hub(CausalLM, backbone, dtype="float32").dtype_policy.name == "float32"


# --- refusals ----------------------------------------------------------------------------------------


def gemma3(**options):
    kwargs = dict(image_size=16, num_layers=1, **HEADS, head_dim=8)
    kwargs.update(options)
    return M.Gemma3Backbone(V, **kwargs)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: gemma3(attention_logit_soft_cap=50.0), "attention_logit_soft_cap"),
        (lambda: gemma3(use_post_attention_norm=True), "sandwich_norm"),
        (lambda: gemma3(use_bidirectional_attention=True), "use_bidirectional_attention"),
        (lambda: gemma3(query_head_dim_normalize=False), "query_head_dim_normalize"),
        (lambda: gemma3(layer_norm_epsilon=1e-5), "different epsilons"),
        (lambda: gemma3(
            vision_encoder=M.Gemma3VisionEncoder(image_size=16, patch_size=4, num_heads=2, hidden_dim=8, num_layers=1,
                                                 intermediate_dim=16, output_dim=32, pool_size=2)
        ), "vision encoder"),
        (lambda: M.LlamaBackbone(V, num_layers=1, **HEADS, rope_position_scaling_factor=2.0), "ignores"),
        (lambda: keras.layers.Dense(3), "GPT2Backbone"),  # the message lists the supported classes
        (lambda: bert_masked_lm(), "MaskedLM.from_keras_hub"),
    ],
)
def test_unsupported_models_are_refused_by_name(build, match):
    with pytest.raises(ValueError, match=match):
        from_keras_hub(CausalLM, build())


@functools.cache
def bert_masked_lm():
    return M.BertMaskedLM(M.BertBackbone(V, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16))


def test_bert_masked_lm_is_refused_naming_the_missing_head_options():
    with pytest.raises(ValueError, match="head activation or head norm epsilon"):
        from_keras_hub(MaskedLM, bert_masked_lm())
    with pytest.raises(ValueError, match="CausalLM.from_keras_hub"):
        from_keras_hub(MaskedLM, M.GPT2Backbone(V, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16))


def test_quantized_keras_hub_models_are_refused():
    backbone = M.LlamaBackbone(V, num_layers=1, **HEADS)
    backbone.quantize("int8")
    with pytest.raises(ValueError, match="quantized"):
        from_keras_hub(CausalLM, backbone)


def test_sequence_length_limits():
    gpt2 = M.GPT2Backbone(V, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=8)
    with pytest.raises(ValueError, match="learned positions"):
        from_keras_hub(CausalLM, gpt2, max_sequence_length=16)
    llama = M.LlamaBackbone(V, num_layers=1, **HEADS)
    assert from_keras_hub(CausalLM, llama).max_sequence_length == convert.DEFAULT_ROTARY_LENGTH
    assert from_keras_hub(CausalLM, llama, max_sequence_length=64).max_sequence_length == 64
    # KerasHub applies Qwen's window on TensorFlow only: the converted model stays inside it.
    qwen = M.QwenBackbone(V, num_layers=1, **HEADS, use_sliding_window_attention=True, sliding_window_size=16)
    assert from_keras_hub(CausalLM, qwen).max_sequence_length == 16
    with pytest.raises(ValueError, match="TensorFlow only"):
        from_keras_hub(CausalLM, qwen, max_sequence_length=17)


def test_every_weight_must_find_its_place(monkeypatch):
    llama = M.LlamaBackbone(V, num_layers=1, **HEADS)
    block = dict(convert_llama.BLOCK)
    del block["feedforward/gate"]
    monkeypatch.setattr(convert_llama, "BLOCK", block)
    with pytest.raises(ValueError, match="No KerasHub weight for kerasllm variables.*feedforward/gate/kernel"):
        from_keras_hub(CausalLM, llama)
    monkeypatch.undo()
    original = convert_gemma3.convert_config
    monkeypatch.setattr(convert_gemma3, "convert_config", lambda b: dict(original(b), sandwich_norm=False))
    with pytest.raises(ValueError, match="post_attention_norm/scale.*no place"):
        from_keras_hub(CausalLM, gemma3(use_post_attention_norm=True, use_post_ffw_norm=True))


def test_the_public_method_is_the_conversion():
    llama = M.LlamaCausalLM(M.LlamaBackbone(V, num_layers=1, **HEADS), preprocessor=None)
    model = CausalLM.from_keras_hub(llama, max_sequence_length=64)
    ids = np.random.RandomState(0).randint(0, V, size=(1, 9))
    expected = np_(llama.predict_on_batch({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
    np.testing.assert_allclose(np_(model(ids)), expected, atol=TOLERANCE)
