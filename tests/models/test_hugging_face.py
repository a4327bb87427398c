"""Hugging Face checkpoints in and out, checked against transformers on the same inputs.

Every family fixture (tests/hf_model_fixtures.py) is a tiny random model whose biases and norm weights
are all moved away from 0 and 1, so a wrong mapping shows in the logits.
"""

import json
import os

import keras
import numpy as np
import pytest

import kerasllm

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import hf_model_fixtures  # noqa: E402  (tests/ is on the path through conftest.py)
from hf_model_fixtures import CAUSAL, NAMES, make_checkpoint, reference_logits, token_ids  # noqa: E402

# One worker builds the fixtures once (each is a transformers model written to disk).
pytestmark = pytest.mark.xdist_group("hugging_face")
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("hugging_face")
    made = {}

    def get(name):
        if name not in made:
            made[name] = (str(root / name), make_checkpoint(name, root / name))
        return made[name]

    return get


def load(name, path, **kwargs):
    model_class = kerasllm.models.MaskedLM if name == "bert" else kerasllm.models.CausalLM
    return model_class.from_preset(path, **kwargs)


def logits(model, inputs):
    return keras.ops.convert_to_numpy(model(inputs))


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_transformers(name, checkpoint):
    path, reference = checkpoint(name)
    model = load(name, path)
    ids = token_ids()
    np.testing.assert_allclose(logits(model, ids), reference_logits(reference, ids), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", ["mistral", "gemma3", "bert"])
def test_padded_batches_match_transformers_on_real_tokens(name, checkpoint):
    path, reference = checkpoint(name)
    model = load(name, path)
    ids = token_ids()
    mask = np.ones_like(ids)
    mask[1, 15:] = 0  # right padding
    inputs = {"token_ids": ids, "padding_mask": mask}
    expected = reference_logits(reference, ids, attention_mask=mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(logits(model, inputs)[real], expected[real], atol=TOLERANCE, rtol=0)


def test_bert_segment_ids_match_token_type_ids(checkpoint):
    path, reference = checkpoint("bert")
    model = load("bert", path)
    ids = token_ids()
    segments = (np.arange(ids.shape[1]) >= 10).astype("int32")[None].repeat(2, axis=0)
    expected = reference_logits(reference, ids, token_type_ids=segments)
    np.testing.assert_allclose(logits(model, {"token_ids": ids, "segment_ids": segments}), expected, atol=TOLERANCE)


@pytest.mark.parametrize("name", CAUSAL)
def test_greedy_continuation_matches_transformers(name, checkpoint):
    path, reference = checkpoint(name)
    model = load(name, path)
    prompt = token_ids(batch=1, length=8, seed=3)
    config = transformers.GenerationConfig(do_sample=False, max_new_tokens=32, eos_token_id=None, pad_token_id=0)
    prompt_tensor = torch.tensor(prompt, dtype=torch.long)
    with torch.no_grad():  # an explicit mask: generate would take the prompt's id 0 for padding
        expected = reference.generate(
            prompt_tensor, attention_mask=torch.ones_like(prompt_tensor), generation_config=config
        )[0].numpy()
    ours = model.generate(prompt, max_new_tokens=32, greedy=True)[0]
    assert len(expected) == 40
    np.testing.assert_array_equal(np.asarray(ours), expected)


@pytest.mark.parametrize("name", CAUSAL)
def test_cached_decoding_equals_the_full_forward(name, checkpoint):
    path, _ = checkpoint(name)
    model = load(name, path)
    ids = token_ids(batch=2, length=20, seed=5)
    full = logits(model, ids)
    cache = model.backbone.initial_cache(2, 20)
    step, cache = model.call_with_cache(keras.ops.convert_to_tensor(ids[:, :7]), cache, 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(step), full[:, 6], atol=TOLERANCE, rtol=0)
    for position in range(7, 20):
        # The position as a tensor, as compiled decoding passes it (one program for every position on JAX).
        index = keras.ops.convert_to_tensor(position, "int32")
        step, cache = model.call_with_cache(keras.ops.convert_to_tensor(ids[:, position : position + 1]), cache, index)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(step), full[:, position], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_export_round_trip(name, checkpoint, tmp_path):
    path, reference = checkpoint(name)
    model = load(name, path)
    exported = model.export_to_transformers(tmp_path / "exported")
    auto = transformers.AutoModelForMaskedLM if name == "bert" else transformers.AutoModelForCausalLM
    reloaded = auto.from_pretrained(exported).eval()
    with open(os.path.join(path, "config.json")) as file:
        original_type = json.load(file)["model_type"]
    assert reloaded.config.model_type == original_type
    ids = token_ids()
    np.testing.assert_allclose(reference_logits(reloaded, ids), reference_logits(reference, ids), atol=TOLERANCE, rtol=0)
    again = load(name, exported)
    np.testing.assert_allclose(logits(again, ids), logits(model, ids), atol=1e-6, rtol=0)


def test_a_wrong_epsilon_or_a_missing_bias_is_detected(checkpoint):
    # The comparison the tests above make must fail for a model that is only slightly wrong.
    path, reference = checkpoint("qwen2")
    ids = token_ids()
    expected = reference_logits(reference, ids)
    model = load("qwen2", path)
    for layer in model._flatten_layers():  # a converter that ignored rms_norm_eps=1e-6 would use 1e-5
        if isinstance(layer, keras.layers.RMSNormalization):
            layer.epsilon = 1e-5
    assert np.abs(logits(model, ids) - expected).max() > TOLERANCE
    model = load("qwen2", path)
    bias = model.backbone.blocks[1].attention.query.bias
    bias.assign(np.zeros(bias.shape, "float32"))
    assert np.abs(logits(model, ids) - expected).max() > TOLERANCE


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_sharded_half_precision_checkpoints(dtype, tmp_path):
    reference = make_checkpoint("llama3", tmp_path, dtype=dtype, max_shard_size="40KB")
    assert os.path.isfile(tmp_path / "model.safetensors.index.json")
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) > 2
    ids = token_ids()
    model = kerasllm.models.CausalLM.from_preset(str(tmp_path))
    assert model.backbone.blocks[0].attention.query.kernel.dtype == "float32"
    np.testing.assert_allclose(logits(model, ids), reference_logits(reference, ids), atol=TOLERANCE, rtol=0)
    half = kerasllm.models.CausalLM.from_preset(str(tmp_path), dtype=dtype)
    kernel = half.backbone.blocks[0].attention.query.kernel
    assert kernel.dtype == dtype
    # The file's values arrive unchanged: the half-precision variable equals the reference's weight.
    expected = reference.model.layers[0].self_attn.q_proj.weight.detach().numpy().T
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.ops.cast(kernel, "float32")), expected)


def _rewrite_config(path, edit):
    with open(os.path.join(path, "config.json")) as file:
        config = json.load(file)
    edit(config)
    with open(os.path.join(path, "config.json"), "w") as file:
        json.dump(config, file)


@pytest.mark.parametrize("name", ["llama3", "gemma3"])
def test_configs_in_the_older_rope_format_load_the_same(name, tmp_path):
    # Hub checkpoints written before transformers 5 use rope_theta / rope_scaling (and Gemma 3's
    # rope_local_base_freq and sliding_window_pattern) instead of rope_parameters.
    make_checkpoint(name, tmp_path)

    def older(config):
        parameters = config.pop("rope_parameters")
        if name == "gemma3":
            full, local = parameters["full_attention"], parameters["sliding_attention"]
            config["rope_theta"] = full.pop("rope_theta")
            config["rope_local_base_freq"] = local["rope_theta"]
            config["rope_scaling"] = full
            config.pop("layer_types")
            config["sliding_window_pattern"] = 2
        else:
            config["rope_theta"] = parameters.pop("rope_theta")
            config["rope_scaling"] = {"type" if k == "rope_type" else k: v for k, v in parameters.items()}

    _rewrite_config(tmp_path, older)
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    ids = token_ids()
    model = kerasllm.models.CausalLM.from_preset(str(tmp_path))
    np.testing.assert_allclose(logits(model, ids), reference_logits(reference, ids), atol=TOLERANCE, rtol=0)


def test_sequence_classifier_matches_bert_for_sequence_classification(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(**hf_model_fixtures._COMMON, num_labels=3)
    reference = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            if parameter.ndim == 1:
                parameter.add_(torch.randn(parameter.shape) * 0.2)
    reference.save_pretrained(str(tmp_path))
    classifier = kerasllm.models.SequenceClassifier.from_preset(str(tmp_path), num_classes=3)
    ids = token_ids()
    mask = np.ones_like(ids)
    mask[0, 20:] = 0
    expected = reference_logits(reference, ids, attention_mask=mask)
    ours = keras.ops.convert_to_numpy(classifier({"token_ids": ids, "padding_mask": mask}))
    np.testing.assert_allclose(ours, expected, atol=TOLERANCE, rtol=0)
    with pytest.raises(ValueError, match="classifier.weight"):
        kerasllm.models.SequenceClassifier.from_preset(str(tmp_path), num_classes=2)


def test_sequence_classifier_from_a_masked_lm_checkpoint_starts_its_head_fresh(checkpoint):
    path, _ = checkpoint("bert")
    classifier = kerasllm.models.SequenceClassifier.from_preset(path, num_classes=2)
    masked_lm = load("bert", path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(classifier.backbone.blocks[1].attention.query.kernel),
        keras.ops.convert_to_numpy(masked_lm.backbone.blocks[1].attention.query.kernel),
    )
    assert keras.ops.convert_to_numpy(classifier(token_ids())).shape == (2, 2)


def test_bert_checkpoints_with_gamma_and_beta_names_load(tmp_path):
    # bert-base-uncased and other checkpoints converted from TensorFlow name LayerNorm weights gamma/beta.
    from safetensors.numpy import load_file, save_file

    reference = make_checkpoint("bert", tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in tensors.items()}
    assert renamed.keys() != tensors.keys()
    save_file(renamed, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ids = token_ids()
    model = kerasllm.models.MaskedLM.from_preset(str(tmp_path))
    np.testing.assert_allclose(logits(model, ids), reference_logits(reference, ids), atol=TOLERANCE, rtol=0)


def test_multimodal_gemma3_checkpoints_load_as_their_text_model(tmp_path):
    text = transformers.Gemma3TextConfig(**hf_model_fixtures._COMMON, num_key_value_heads=2, head_dim=16,
                                         sliding_window=8, query_pre_attn_scalar=20)
    vision = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14)
    config = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                       image_token_index=210, boi_token_index=208, eoi_token_index=209)
    torch.manual_seed(0)
    reference = transformers.Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            if parameter.ndim == 1:
                parameter.add_(torch.randn(parameter.shape) * 0.2)
    reference.save_pretrained(str(tmp_path))
    ids = token_ids() % 200  # text tokens only
    model = kerasllm.models.CausalLM.from_preset(str(tmp_path))
    np.testing.assert_allclose(logits(model, ids), reference_logits(reference, ids), atol=TOLERANCE, rtol=0)


# --- bad inputs ----------------------------------------------------------------------------------------


def _nothing_left_uninitialized():
    from keras.src.backend.common import global_state

    return not global_state.get_global_attribute("uninitialized_variables")


def test_a_directory_without_config_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        kerasllm.models.CausalLM.from_preset(str(tmp_path))
    with pytest.raises(ValueError, match="Unknown CausalLM preset 'not-a-preset'"):
        kerasllm.models.CausalLM.from_preset("not-a-preset")


def test_missing_and_truncated_shards_are_named(tmp_path):
    make_checkpoint("llama2", tmp_path, max_shard_size="40KB")
    shards = sorted(f for f in os.listdir(tmp_path) if f.endswith(".safetensors"))
    path = tmp_path / shards[1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=shards[1]):
        kerasllm.models.CausalLM.from_preset(str(tmp_path))
    os.remove(path)
    with pytest.raises(FileNotFoundError, match=shards[1]):
        kerasllm.models.CausalLM.from_preset(str(tmp_path))
    assert _nothing_left_uninitialized()


def test_a_tensor_of_the_wrong_shape_is_named(tmp_path):
    make_checkpoint("llama2", tmp_path)
    _rewrite_config(tmp_path, lambda config: config.update(intermediate_size=80))
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight .* has shape \(96, 64\), but "
                                         r"config\.json implies \(80, 64\)"):
        kerasllm.models.CausalLM.from_preset(str(tmp_path))
    assert _nothing_left_uninitialized()


def test_missing_and_unexpected_tensors(tmp_path):
    make_checkpoint("qwen2", tmp_path)
    # Read as a Llama (no biases), the Qwen2 checkpoint has tensors the model has no place for.
    _rewrite_config(tmp_path, lambda config: config.update(model_type="llama"))
    with pytest.raises(ValueError, match=r"no place for.*self_attn\.[qkv]_proj\.bias"):
        kerasllm.models.CausalLM.from_preset(str(tmp_path))
    # Read as Llama with attention_bias, the output projection's bias is missing.
    _rewrite_config(tmp_path, lambda config: config.update(attention_bias=True))
    with pytest.raises(ValueError, match=r"lacks .*o_proj\.bias"):
        kerasllm.models.CausalLM.from_preset(str(tmp_path))
    assert _nothing_left_uninitialized()


@pytest.mark.parametrize(
    "edit, message",
    [
        (dict(model_type="phi3"), r"model_type='phi3'.*Supported model types"),
        (dict(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}), "rope_type 'dynamic'"),
        (dict(rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0}), "rope_type 'longrope'"),
        (dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 10000.0}), "needs"),
        (dict(hidden_act="gelu"), "hidden_act='gelu'"),
        (dict(partial_rotary_factor=0.5), "partial_rotary_factor"),
    ],
)
def test_unsupported_config_options_are_named(edit, message, tmp_path):
    make_checkpoint("llama2", tmp_path)
    _rewrite_config(tmp_path, lambda config: config.update(edit))
    with pytest.raises(ValueError, match=message):
        kerasllm.models.CausalLM.from_preset(str(tmp_path))


def test_an_encoder_is_not_a_causal_lm(checkpoint):
    path, _ = checkpoint("bert")
    with pytest.raises(ValueError, match="MaskedLM.from_preset"):
        kerasllm.models.CausalLM.from_preset(path)
    path, _ = checkpoint("llama2")
    with pytest.raises(ValueError, match="CausalLM.from_preset"):
        kerasllm.models.MaskedLM.from_preset(path)


def test_gemma3_options_transformers_has_but_kerasllm_does_not_are_refused(tmp_path):
    make_checkpoint("gemma3", tmp_path)
    _rewrite_config(tmp_path, lambda config: config.update(attn_logit_softcapping=50.0))
    with pytest.raises(ValueError, match="attn_logit_softcapping"):
        kerasllm.models.CausalLM.from_preset(str(tmp_path))
