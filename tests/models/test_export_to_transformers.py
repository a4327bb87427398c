"""`export_to_transformers` of models trained or changed by kerasllm: transformers computes the same logits."""

import os

import keras
import numpy as np
import pytest

import kerasllm
from kerasllm.utils import dense_transforms

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

TOLERANCE = 1e-4
SMALL = dict(vocabulary_size=97, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=48, max_sequence_length=32)
GPT2_STYLE = dict(SMALL)
LLAMA_STYLE = dict(SMALL, num_key_value_heads=2, position_embedding="rotary", normalization="rmsnorm",
                   activation="swiglu", use_bias=False, tie_word_embeddings=False, layer_norm_epsilon=1e-6)


def randomized(model, seed=0):
    """Every weight random (norm scales and biases included), so nothing hides behind ones and zeros."""
    rng = np.random.RandomState(seed)
    for variable in model.weights:
        variable.assign(rng.normal(scale=0.1, size=variable.shape).astype(variable.dtype))
    return model


def ids(batch=2, length=12, seed=0, vocabulary=97):
    return np.random.RandomState(seed).randint(0, vocabulary, size=(batch, length)).astype("int32")


def transformers_logits(directory, inputs):
    model = transformers.AutoModelForCausalLM.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        return model(torch.tensor(inputs, dtype=torch.long)).logits.numpy()


def ours(model, inputs):
    return keras.ops.convert_to_numpy(model(inputs))


@pytest.mark.parametrize("config, family", [(GPT2_STYLE, "gpt2"), (LLAMA_STYLE, "llama")], ids=["gpt2", "llama"])
def test_a_model_trained_by_kerasllm_exports_as_its_family(config, family, tmp_path):
    model = randomized(kerasllm.models.CausalLM(**config))
    model.export_to_transformers(tmp_path / "out")
    assert transformers.AutoConfig.from_pretrained(str(tmp_path / "out")).model_type == family
    x = ids()
    np.testing.assert_allclose(transformers_logits(tmp_path / "out", x), ours(model, x), atol=TOLERANCE, rtol=0)


def test_presets_export(tmp_path):
    for name in ("tiny", "tiny-llama"):
        model = kerasllm.models.CausalLM.from_preset(name, vocabulary_size=300)
        model.export_to_transformers(tmp_path / name)
        x = ids(vocabulary=300)
        np.testing.assert_allclose(transformers_logits(tmp_path / name, x), ours(model, x), atol=TOLERANCE, rtol=0)


def test_lora_adapters_are_merged_and_the_model_keeps_them(tmp_path):
    model = randomized(kerasllm.models.CausalLM(**LLAMA_STYLE))
    model.enable_lora(rank=2, target_layers=("query", "value", "intermediate"))
    rng = np.random.RandomState(1)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Dense) and layer.lora_enabled:
            layer.lora_kernel_b.assign(rng.normal(scale=0.5, size=layer.lora_kernel_b.shape).astype("float32"))
    x = ids()
    model.export_to_transformers(tmp_path / "out")
    np.testing.assert_allclose(transformers_logits(tmp_path / "out", x), ours(model, x), atol=TOLERANCE, rtol=0)
    assert model.backbone.blocks[0].attention.query.lora_enabled


@pytest.mark.parametrize("strip", [True, False], ids=["stripped", "masks-attached"])
def test_pruned_weights_are_written_as_zeros(strip, tmp_path):
    model = randomized(kerasllm.models.CausalLM(**GPT2_STYLE))
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=kerasllm.losses.CausalLMLoss())
    x = ids(batch=4, length=9)
    pruning = kerasllm.callbacks.Pruning(target_sparsity=0.5, schedule="constant", frequency=1, strip_on_train_end=strip)
    model.fit(x[:, :-1], x[:, 1:], batch_size=2, epochs=1, verbose=0, callbacks=[pruning])
    model.export_to_transformers(tmp_path / "out")
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    fc = reference.transformer.h[0].mlp.c_fc.weight.detach().numpy()
    assert 0.45 <= np.mean(fc == 0) <= 0.55
    np.testing.assert_allclose(transformers_logits(tmp_path / "out", x), ours(model, x), atol=TOLERANCE, rtol=0)


def test_low_rank_factors_are_multiplied_back(tmp_path):
    model = randomized(kerasllm.models.CausalLM(**LLAMA_STYLE))
    factorized, _ = kerasllm.quantization.factorize(model, rank=4)
    assert isinstance(factorized.backbone.blocks[0].attention.query, kerasllm.layers.LowRankDense)
    factorized.export_to_transformers(tmp_path / "out")
    x = ids()
    np.testing.assert_allclose(transformers_logits(tmp_path / "out", x), ours(factorized, x), atol=TOLERANCE, rtol=0)


def test_quantized_or_training_layers_are_refused(tmp_path):
    model = randomized(kerasllm.models.CausalLM(**LLAMA_STYLE))
    layer = model.backbone.blocks[0].attention.query
    dense_transforms.add_transform(layer, "qat", input_fn=lambda inputs: inputs)
    with pytest.raises(ValueError, match="quantization-aware training"):
        model.export_to_transformers(tmp_path / "qat")
    dense_transforms.remove_transform(layer, "qat")
    model.quantize("int8")
    with pytest.raises(ValueError, match="is quantized"):
        model.export_to_transformers(tmp_path / "int8")
    assert not os.path.exists(tmp_path / "int8") or not os.listdir(tmp_path / "int8")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(LLAMA_STYLE, normalization="layernorm"), "normalization='layernorm'"),
        (dict(GPT2_STYLE, num_key_value_heads=2), "num_key_value_heads=2"),
        (dict(LLAMA_STYLE, embedding_scale=2.0), "embedding_scale=2.0"),
        (dict(GPT2_STYLE, model_type="llama"), "cannot be written as a Llama checkpoint.*hidden_act='gelu'"),
    ],
)
def test_options_the_format_cannot_express_are_named(overrides, message, tmp_path):
    overrides = dict(overrides)
    model_type = overrides.pop("model_type", None)
    model = kerasllm.models.CausalLM(**overrides)
    with pytest.raises(ValueError, match=message):
        model.export_to_transformers(tmp_path / "out", model_type=model_type)
    assert not os.path.exists(tmp_path / "out")


def test_half_precision_export_and_overwrite(tmp_path):
    model = randomized(kerasllm.models.CausalLM(**LLAMA_STYLE))
    out = tmp_path / "out"
    model.export_to_transformers(out, dtype="bfloat16")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype="auto")
    assert reloaded.dtype == torch.bfloat16
    x = ids()
    with torch.no_grad():
        logits = reloaded(torch.tensor(x, dtype=torch.long)).logits.float().numpy()
    np.testing.assert_allclose(logits, ours(model, x), atol=0.05, rtol=0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.export_to_transformers(out)
    model.export_to_transformers(out, overwrite=True, max_shard_size="40KB")
    assert os.path.isfile(out / "model.safetensors.index.json") and not os.path.isfile(out / "model.safetensors")
    np.testing.assert_allclose(transformers_logits(out, x), ours(model, x), atol=TOLERANCE, rtol=0)
    assert [name for name in os.listdir(tmp_path) if name != "out"] == []  # no staging folder left behind


def test_the_tokenizer_is_written_beside_the_model(tmp_path):
    text = "To be, or not to be, that is the question. " * 20
    tokenizer = kerasllm.tokenizers.BytePairTokenizer.train(text, vocabulary_size=300)
    model = randomized(kerasllm.models.CausalLM(**dict(GPT2_STYLE, vocabulary_size=tokenizer.vocabulary_size)))
    model.export_to_transformers(tmp_path / "out", tokenizer=tokenizer)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    sample = "Whether 'tis nobler"
    assert hf_tokenizer(sample)["input_ids"] == tokenizer.encode(sample)
    assert hf_tokenizer.model_max_length == model.max_sequence_length
    config = transformers.AutoConfig.from_pretrained(str(tmp_path / "out"))
    assert config.eos_token_id == tokenizer.eos_token_id
    x = np.array([tokenizer.encode(sample)], dtype="int32")
    np.testing.assert_allclose(transformers_logits(tmp_path / "out", x), ours(model, x), atol=TOLERANCE, rtol=0)
    with pytest.raises(ValueError, match="vocabulary"):  # a tokenizer with ids the model does not have
        kerasllm.models.CausalLM(**dict(GPT2_STYLE, vocabulary_size=10)).export_to_transformers(tmp_path / "x", tokenizer=tokenizer)
