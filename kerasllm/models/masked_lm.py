import keras

from kerasllm.models.language_model import LanguageModel
from kerasllm.models.presets import MASKED_LM_PRESETS


@keras.saving.register_keras_serializable(package="kerasllm")
class MaskedLM(LanguageModel):
    """Bidirectional Transformer encoder trained with the masked-token objective (BERT style).

    Maps token ids `(B, T)` (or `{"token_ids", "padding_mask"}`) to logits `(B, T, V)` for every
    position; train it on batches from `kerasllm.data.masked_language_modeling_splits`, whose labels
    are `-100` except at the masked positions, with `kerasllm.losses.MaskedLMLoss`. Takes the same
    architecture arguments as `kerasllm.models.CausalLM`; presets: `MaskedLM.presets`.

    Example:

    >>> model = kerasllm.models.MaskedLM.from_preset("tiny", vocabulary_size=tokenizer.vocabulary_size)
    >>> model.compile(optimizer="adamw", loss=kerasllm.losses.MaskedLMLoss(),
    ...               metrics=[kerasllm.metrics.MaskedAccuracy()])

    References:
        - [Devlin et al., 2019](https://arxiv.org/abs/1810.04805)
    """

    causal = False
    presets = MASKED_LM_PRESETS
