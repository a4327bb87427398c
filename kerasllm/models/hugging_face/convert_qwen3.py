"""Qwen3: Llama's layout with an RMS norm on each head of the queries and keys (`q_norm`, `k_norm`),
`attention_bias` on all four attention projections, and Qwen2's optional sliding window."""

from kerasllm.models.hugging_face import config as hf
from kerasllm.models.hugging_face import convert_llama, convert_qwen2

NAME = "Qwen3"
MODEL_TYPES = ("qwen3",)
TASKS = {"causal_lm": "Qwen3ForCausalLM"}
BASE_PREFIXES = convert_llama.BASE_PREFIXES
EXPORT_PREFIX = convert_llama.EXPORT_PREFIX


def to_kerasllm(config):
    converted = convert_llama.to_kerasllm(dict(config, mlp_bias=False), NAME)
    types, window = convert_qwen2.layer_types(config)
    converted.update(qk_norm=True, layer_types=hf.compact_layer_types(types, window), sliding_window=window)
    return converted


def to_hugging_face(config, task="causal_lm"):
    return dict(
        model_type="qwen3",
        architectures=[TASKS[task]],
        **convert_llama.decoder_fields(config),
        **convert_qwen2.window_fields(config),
        attention_bias=config["use_bias"],
        hidden_act=hf.GATED_TO_HF.get(config["activation"], config["activation"]),
    )


weights = convert_llama.weights
ignored = convert_llama.ignored
