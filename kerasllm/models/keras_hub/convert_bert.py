"""KerasHub BERT -> kerasllm `MaskedLM`: refused, for two head settings kerasllm cannot express.

BERT's blocks map onto kerasllm's options (`normalize_first=False`, `num_segments`, `embedding_norm`,
LayerNorm epsilon 1e-12, tanh GELU), but `BertMaskedLM`'s head (`MaskedLMHead`) applies Keras's exact
(erf) GELU and a LayerNorm with epsilon 1e-5, while kerasllm's `head_transform` reuses the blocks'
activation and `layer_norm_epsilon`. Converting needs a head activation and a head norm epsilon of
their own in kerasllm; until then the conversion is refused rather than approximated.
"""

BACKBONES = ("BertBackbone",)
TASKS = ("BertMaskedLM",)
CAUSAL = False
TASK_WEIGHTS = True
NORMS = ("LayerNormalization",)
EPSILON_HINT = ""

TOP, BLOCK_PREFIX, BLOCK = {}, ("", ""), {}


def convert_config(backbone):
    raise ValueError(
        "KerasHub BERT cannot be converted exactly yet: BertMaskedLM's head uses the exact (erf) GELU and a "
        "LayerNorm with epsilon 1e-5, while its blocks use the tanh GELU and epsilon 1e-12; kerasllm's "
        "`head_transform` uses the blocks' activation and `layer_norm_epsilon`, and has no head activation or "
        "head norm epsilon of its own. (A BertBackbone alone has no masked-LM head to convert.)"
    )
