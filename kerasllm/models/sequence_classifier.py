import keras
from keras import ops

from kerasllm.models.language_model import LanguageModel
from kerasllm.models.transformer_backbone import TransformerBackbone
from kerasllm.optimizers.layer_decay import layer_decay_multipliers, scale_learning_rates

POOLINGS = ("last", "mean", "first")


@keras.saving.register_keras_serializable(package="kerasllm")
class SequenceClassifier(keras.Model):
    """A classification head on a kerasllm backbone (causal or bidirectional), for fine-tuning.

    Pools the backbone's final hidden states over real (non-padding) tokens and maps them to
    `num_classes` logits.

    Args:
        backbone: a `kerasllm.models.TransformerBackbone` (e.g. `causal_lm.backbone`).
        num_classes: int. Number of classes, at least 2.
        pooling: str. `"last"` (last real token; the natural choice for a causal backbone), `"mean"`
            (mean over real tokens) or `"first"`. Defaults to `"last"` for causal backbones and
            `"mean"` otherwise.
        dropout: float. Dropout before the head. Defaults to `0.1`.
        pooler: bool. A dense layer with tanh on the pooled vector before the head (sublayer
            `pooler`), as BERT's classifier has. Defaults to `False`.
        layer_decay: float in (0, 1]. Layer-wise learning-rate decay applied by `compile()`: the head
            and final norm train at the optimizer's learning rate, block `i` of `L` at
            `decay ** (L - i)` times it, the embeddings at `decay ** (L + 1)` times it (see
            `kerasllm.optimizers.layer_decay_multipliers`). Defaults to `None` (one rate for all).
        **kwargs: standard `keras.Model` arguments.

    Call arguments:
        inputs: int token ids `(B, T)` or a dict `{"token_ids", "padding_mask"}`.

    Returns:
        Logits `(B, num_classes)` in float32.

    Example:

    >>> lm = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=512)
    >>> classifier = kerasllm.models.SequenceClassifier.from_backbone(lm, num_classes=3, layer_decay=0.8)
    >>> classifier.compile("adamw", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    """

    def __init__(self, backbone, num_classes, pooling=None, dropout=0.1, layer_decay=None, pooler=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"num_classes must be an integer >= 2, got {num_classes!r}: a classifier needs at least two "
                "classes. For a yes/no task use num_classes=2 (labels 0 and 1)."
            )
        if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
            raise ValueError(
                f"layer_decay must lie in (0, 1] or be None, got {layer_decay!r}; 0.65 to 0.95 are usual."
            )
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if not isinstance(backbone, TransformerBackbone):
            raise ValueError(
                "`backbone` must be a kerasllm TransformerBackbone; use "
                "`SequenceClassifier.from_backbone(model, num_classes)` with a CausalLM or MaskedLM."
            )
        pooling = pooling or ("last" if backbone.causal else "mean")
        if pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {pooling!r}; use one of {POOLINGS}.")
        # === Layers ===
        self.backbone = backbone
        self.pooler = None
        if pooler:
            self.pooler = keras.layers.Dense(
                backbone.hidden_dim, activation="tanh", dtype=self.dtype_policy, name="pooler"
            )
        self.head_dropout = keras.layers.Dropout(dropout, name="head_dropout")
        self.head = keras.layers.Dense(num_classes, dtype=self.dtype_policy, name="classification_head")
        # === Config ===
        self.num_classes = num_classes
        self.pooling = pooling
        self.dropout = dropout
        self.layer_decay = layer_decay
        self.use_pooler = pooler
        self.vocabulary_size = backbone.vocabulary_size
        self.max_sequence_length = backbone.max_sequence_length
        if self.pooler is not None:
            self.pooler.build((None, backbone.hidden_dim))
        self.head.build((None, backbone.hidden_dim))
        self.built = True

    @classmethod
    def from_backbone(cls, model, num_classes, layer_decay=None, **kwargs):
        """Builds a classifier on the backbone (and weights) of a trained `CausalLM` or `MaskedLM`.

        The classifier shares the model's backbone (its variables, not a copy). A backbone whose
        variables were frozen by LoRA or prompt tuning is used as is.

        Args:
            model: a `kerasllm.models.CausalLM` or `MaskedLM`, or a `TransformerBackbone`.
            num_classes: int. Number of classes, at least 2.
            layer_decay: float in (0, 1]. Layer-wise learning-rate decay (see the class docstring).
                Defaults to `None`.
            **kwargs: other `SequenceClassifier` arguments (`pooling`, `dropout`, `name`).

        Returns:
            A `kerasllm.models.SequenceClassifier`.
        """
        backbone = model.backbone if isinstance(model, LanguageModel) else model
        return cls(backbone=backbone, num_classes=num_classes, layer_decay=layer_decay, **kwargs)

    @classmethod
    def from_preset(cls, directory, num_classes, layer_decay=None, **kwargs):
        """A classifier on a pretrained encoder from a Hugging Face BERT model directory.

        The backbone, BERT's pooler and, when the checkpoint has one (a
        `BertForSequenceClassification` fine-tuned for `num_classes` classes), the classifier head are
        loaded; a checkpoint without pooler or head (e.g. `BertForMaskedLM`) starts them fresh, as
        transformers does. Pooling is BERT's: the first (`[CLS]`) token through the pooler.

        Args:
            directory: str. A Hugging Face BERT model directory (config.json, *.safetensors).
            num_classes: int. Number of classes, at least 2.
            layer_decay: float in (0, 1]. Layer-wise learning-rate decay. Defaults to `None`.
            **kwargs: `dropout`, `name`, `dtype` and backbone training options (`remat`).

        Example:

        >>> classifier = kerasllm.models.SequenceClassifier.from_preset("./bert-base-uncased", num_classes=2)
        >>> tokenizer = kerasllm.tokenizers.load("./bert-base-uncased")
        """
        from kerasllm.models.hugging_face import loading

        family, hf_config, config = loading.read_model_config(directory, "classifier")
        config.update({k: kwargs.pop(k) for k in ("remat",) if k in kwargs})
        dtype = kwargs.pop("dtype", None)
        dropout = kwargs.pop("dropout", hf_config.get("classifier_dropout") or hf_config.get("hidden_dropout_prob", 0.1))
        language_model_only = ("tie_word_embeddings", "head_transform", "head_bias")

        def build(config):
            backbone_config = {k: v for k, v in config.items() if k not in language_model_only}
            backbone = TransformerBackbone(**backbone_config, causal=False, dtype=dtype, name="backbone")
            backbone.build()
            return cls(backbone, num_classes, pooling="first", dropout=dropout, layer_decay=layer_decay,
                       pooler=True, dtype=dtype, **kwargs)

        return loading.load_weights_into_new_model(build, directory, family, config, "classifier")

    @property
    def num_virtual_tokens(self):
        """Length of the backbone's soft prompt (`0` without one); inputs leave room for it."""
        return self.backbone.num_virtual_tokens

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        if self.layer_decay is not None:
            optimizer = keras.optimizers.get(optimizer)
            scale_learning_rates(
                optimizer, layer_decay_multipliers(self.backbone, self.layer_decay, self.head.weights)
            )
        super().compile(optimizer, *args, **kwargs)

    def compile_from_config(self, config):
        # Keras skips restoring the compiled state of models that override `compile()`; ours only
        # adds the learning-rate multipliers, so restore it as `keras.Model.compile_from_config` does.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if hasattr(self, "optimizer") and self.built:
            self.optimizer.build(self.trainable_variables)

    def call(self, inputs, training=None):
        token_ids, padding_mask = LanguageModel._unpack_inputs(self, inputs)
        segment_ids = inputs.get("segment_ids") if isinstance(inputs, dict) else None
        hidden = self.backbone(token_ids, padding_mask=padding_mask, training=training, segment_ids=segment_ids)
        hidden = ops.cast(hidden, "float32")
        if padding_mask is None:
            real = ops.ones(ops.shape(token_ids), dtype="float32")
        else:
            real = ops.cast(padding_mask, "float32")
        if self.pooling == "mean":
            pooled = ops.sum(hidden * real[..., None], axis=1) / ops.maximum(ops.sum(real, axis=1, keepdims=True), 1.0)
        elif self.pooling == "first":
            pooled = hidden[:, 0]
        else:
            last = ops.cast(ops.maximum(ops.sum(real, axis=1) - 1, 0), "int32")  # (B,)
            pooled = ops.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
        if self.pooler is not None:
            pooled = ops.cast(self.pooler(ops.cast(pooled, self.compute_dtype)), "float32")
        pooled = self.head_dropout(pooled, training=training)
        return ops.cast(self.head(ops.cast(pooled, self.compute_dtype)), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "num_classes": self.num_classes,
                "pooling": self.pooling,
                "dropout": self.dropout,
                "layer_decay": self.layer_decay,
                "pooler": self.use_pooler,
            }
        )
        return config
