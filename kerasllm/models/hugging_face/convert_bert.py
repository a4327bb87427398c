"""BERT: a post-norm encoder with segment (token type) embeddings, an embedding LayerNorm, the exact
GELU, and a masked-LM head that transforms the hidden states (dense, GELU, LayerNorm) before the tied
vocabulary projection and its bias. `SequenceClassifier` adds BERT's pooler (dense and tanh on the
first token) and classifier."""

from kerasllm.models.hugging_face import config as hf
from kerasllm.models.hugging_face.weights import Weight, linear, norm

NAME = "BERT"
MODEL_TYPES = ("bert",)
TASKS = {"masked_lm": "BertForMaskedLM", "classifier": "BertForSequenceClassification"}
BASE_PREFIXES = ("bert.", "")
EXPORT_PREFIX = "bert."
# Checkpoints converted from TensorFlow (bert-base-uncased among them) name LayerNorm weights gamma and beta.
ALIASES = ((r"LayerNorm\.weight$", "LayerNorm.gamma"), (r"LayerNorm\.bias$", "LayerNorm.beta"))


def to_kerasllm(config):
    hf.require(config, "position_embedding_type", (None, "absolute"), NAME)
    hf.require(config, "is_decoder", (None, False), NAME)
    hf.require(config, "add_cross_attention", (None, False), NAME)
    return dict(
        vocabulary_size=config["vocab_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        hidden_dim=config["hidden_size"],
        intermediate_dim=config["intermediate_size"],
        max_sequence_length=config.get("max_position_embeddings", 512),
        position_embedding="learned",
        normalization="layernorm",
        activation=hf.activation(config, "hidden_act", False, NAME),
        use_bias=True,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", True)),
        layer_norm_epsilon=config.get("layer_norm_eps", 1e-12),
        normalize_first=False,
        num_segments=config.get("type_vocab_size", 2),
        embedding_norm=True,
        head_transform=True,
        head_bias=True,
    )


def to_hugging_face(config, task="masked_lm"):
    return dict(
        model_type="bert",
        architectures=[TASKS[task]],
        vocab_size=config["vocabulary_size"],
        hidden_size=config["hidden_dim"],
        num_hidden_layers=config["num_layers"],
        num_attention_heads=config["num_heads"],
        intermediate_size=config["intermediate_dim"],
        max_position_embeddings=config["max_sequence_length"],
        hidden_act=hf.PLAIN_TO_HF.get(config["activation"], config["activation"]),
        type_vocab_size=config["num_segments"],
        layer_norm_eps=config["layer_norm_epsilon"],
        tie_word_embeddings=config["tie_word_embeddings"],
        position_embedding_type="absolute",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def weights(config, task="masked_lm"):
    entries = [
        Weight("embeddings.word_embeddings.weight", (("backbone/token_embedding", "embeddings"),)),
        Weight("embeddings.position_embeddings.weight", (("backbone/position_embedding", "position_embeddings"),)),
        Weight("embeddings.token_type_embeddings.weight", (("backbone/segment_embedding", "embeddings"),)),
        *norm("embeddings.LayerNorm", "backbone/embedding_norm", "layernorm"),
    ]
    for i in range(config["num_layers"]):
        hf_layer, block = f"encoder.layer.{i}.", f"backbone/block_{i}/"
        for name in ("query", "key", "value"):
            entries += linear(f"{hf_layer}attention.self.{name}", f"{block}attention/{name}", bias=True)
        entries += linear(hf_layer + "attention.output.dense", block + "attention/output", bias=True)
        entries += norm(hf_layer + "attention.output.LayerNorm", block + "attention_norm", "layernorm")
        entries += linear(hf_layer + "intermediate.dense", block + "feedforward/intermediate", bias=True)
        entries += linear(hf_layer + "output.dense", block + "feedforward/output", bias=True)
        entries += norm(hf_layer + "output.LayerNorm", block + "feedforward_norm", "layernorm")
    if task == "masked_lm":
        entries += linear("cls.predictions.transform.dense", "head_dense", bias=True, head=True)
        entries += norm("cls.predictions.transform.LayerNorm", "head_norm", "layernorm", head=True)
        entries.append(Weight("cls.predictions.bias", (("", "logit_bias"),), head=True))
        if not config["tie_word_embeddings"]:
            entries += linear("cls.predictions.decoder", "lm_head", head=True)
    else:
        # A fine-tuning run may start from a checkpoint without pooler or classifier: those start fresh.
        entries += linear("pooler.dense", "pooler", bias=True, optional=True)
        entries += linear("classifier", "classification_head", bias=True, head=True, optional=True)
    return entries


def ignored(config, task="masked_lm"):
    """Buffers, the duplicated decoder bias, and the heads of the other tasks (pre-training's
    next-sentence head; the pooler for masked LM; the masked-LM head for classification)."""
    patterns = [r"(bert\.)?embeddings\.position_ids", r"cls\.seq_relationship\..*", r"cls\.predictions\.decoder\.bias"]
    if config["tie_word_embeddings"]:
        patterns.append(r"cls\.predictions\.decoder\.weight")
    patterns.append(r"(bert\.)?pooler\..*" if task == "masked_lm" else r"cls\..*")
    return patterns
