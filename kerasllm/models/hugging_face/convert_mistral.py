"""Mistral: Llama's layout with a sliding attention window on every layer (`sliding_window`, or
none when config.json sets it to null, as Mistral 7B v0.2 and later do)."""

from kerasllm.models.hugging_face import convert_llama

NAME = "Mistral"
MODEL_TYPES = ("mistral",)
TASKS = {"causal_lm": "MistralForCausalLM"}
BASE_PREFIXES = convert_llama.BASE_PREFIXES
EXPORT_PREFIX = convert_llama.EXPORT_PREFIX


def to_kerasllm(config):
    converted = convert_llama.to_kerasllm(dict(config, attention_bias=False, mlp_bias=False), NAME)
    window = config.get("sliding_window")
    converted.update(sliding_window=window)  # on every layer: the default pattern
    return converted


def to_hugging_face(config, task="causal_lm"):
    return dict(
        model_type="mistral",
        architectures=[TASKS[task]],
        **convert_llama.decoder_fields(config),
        hidden_act=convert_llama.hf.GATED_TO_HF.get(config["activation"], config["activation"]),
        sliding_window=config["sliding_window"],
    )


weights = convert_llama.weights
ignored = convert_llama.ignored
