"""Tiny random Hugging Face checkpoints of every supported family, made offline with `transformers`.

`make_checkpoint(name, directory)` builds the family's transformers model from a small config (a
vocabulary of 211 ids, not a multiple of anything; 2-4 layers; inputs of 24 tokens are longer than the
sliding windows), moves every bias and norm weight away from its initial zero or one so that a wrong
mapping cannot hide, and writes it with `save_pretrained`. Tests call `pytest.importorskip("transformers")`
first.

```python
import hf_model_fixtures

reference = hf_model_fixtures.make_checkpoint("mistral", tmp_path / "mistral")  # the torch model, eval mode
```
"""

import numpy as np

VOCABULARY_SIZE = 211
SEQUENCE_LENGTH = 24
_COMMON = dict(
    vocab_size=VOCABULARY_SIZE, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
    max_position_embeddings=128,
)


def _configs(transformers):
    return {
        # name: (model class, config, kerasllm class name)
        "gpt2": (transformers.GPT2LMHeadModel, transformers.GPT2Config(
            vocab_size=VOCABULARY_SIZE, n_embd=64, n_layer=3, n_head=4, n_positions=128, n_inner=96)),
        "gpt2_untied": (transformers.GPT2LMHeadModel, transformers.GPT2Config(
            vocab_size=VOCABULARY_SIZE, n_embd=32, n_layer=2, n_head=2, n_positions=64, tie_word_embeddings=False)),
        "llama2": (transformers.LlamaForCausalLM, transformers.LlamaConfig(**_COMMON, num_key_value_heads=4)),
        "llama3": (transformers.LlamaForCausalLM, transformers.LlamaConfig(
            **_COMMON, num_key_value_heads=2, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 16})),
        "llama_yarn": (transformers.LlamaForCausalLM, transformers.LlamaConfig(
            **_COMMON, num_key_value_heads=2, rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                                            "original_max_position_embeddings": 32})),
        "llama_linear_tied_mqa": (transformers.LlamaForCausalLM, transformers.LlamaConfig(
            **_COMMON, num_key_value_heads=1, tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
            rope_scaling={"rope_type": "linear", "factor": 2.0})),
        "mistral": (transformers.MistralForCausalLM, transformers.MistralConfig(
            **_COMMON, num_key_value_heads=2, sliding_window=8)),
        "qwen2": (transformers.Qwen2ForCausalLM, transformers.Qwen2Config(**_COMMON, num_key_value_heads=2)),
        "qwen2_sliding": (transformers.Qwen2ForCausalLM, transformers.Qwen2Config(
            **_COMMON, num_key_value_heads=2, use_sliding_window=True, sliding_window=6, max_window_layers=1)),
        "qwen3": (transformers.Qwen3ForCausalLM, transformers.Qwen3Config(
            **_COMMON, num_key_value_heads=2, head_dim=24, tie_word_embeddings=True)),
        "gemma3": (transformers.Gemma3ForCausalLM, transformers.Gemma3TextConfig(
            **dict(_COMMON, num_hidden_layers=4), num_key_value_heads=2, head_dim=16, sliding_window=8,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            query_pre_attn_scalar=20, final_logit_softcapping=30.0,
            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 1000.0}})),
        "bert": (transformers.BertForMaskedLM, transformers.BertConfig(**_COMMON)),
    }


CAUSAL = ("gpt2", "gpt2_untied", "llama2", "llama3", "llama_yarn", "llama_linear_tied_mqa", "mistral", "qwen2",
          "qwen2_sliding", "qwen3", "gemma3")
NAMES = CAUSAL + ("bert",)


def make_checkpoint(name, directory, seed=0, dtype=None, max_shard_size=None, **config_overrides):
    """Writes a tiny random checkpoint of family `name` to `directory`; returns the torch model (float32,
    eval mode) whose weights were written (rounded to `dtype` when one is given)."""
    import torch
    import transformers

    model_class, config = _configs(transformers)[name]
    for key, value in config_overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 1:  # biases and norm weights: away from 0 and 1
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
    model.save_pretrained(str(directory), **kwargs)
    return model.float().eval()


def token_ids(batch=2, length=SEQUENCE_LENGTH, seed=0):
    return np.random.RandomState(seed).randint(0, VOCABULARY_SIZE, size=(batch, length)).astype("int32")


def reference_logits(model, ids, **inputs):
    import torch

    with torch.no_grad():
        tensors = {k: torch.tensor(np.asarray(v)) for k, v in inputs.items()}
        return model(torch.tensor(np.asarray(ids), dtype=torch.long), **tensors).logits.float().numpy()
