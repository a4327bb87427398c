"""SequenceClassifier.from_backbone: learning a held-out task, layer-wise learning-rate decay, bad input."""

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.models import CausalLM, SequenceClassifier

TINY = dict(vocabulary_size=61, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)


def np_(x):
    return ops.convert_to_numpy(x)


def topic_task(n, seed):
    """Three classes, each with its own 10 "topic" tokens; 4 of a passage's 12 tokens are topical, the
    rest shared noise, at random places, so the class is only visible from the whole passage."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n).astype("int32")
    x = rng.integers(31, 61, (n, 12))
    for row, label in enumerate(labels):
        places = rng.choice(12, 4, replace=False)
        x[row, places] = rng.integers(1 + 10 * label, 11 + 10 * label, 4)
    return x.astype("int32"), labels


def test_classifier_from_pretrained_lm_learns_held_out_task_above_chance():
    lm = CausalLM(**TINY)
    classifier = SequenceClassifier.from_backbone(lm, num_classes=3, pooling="mean", dropout=0.0, layer_decay=0.9)
    x, y = topic_task(384, seed=0)
    x_test, y_test = topic_task(192, seed=1)
    classifier.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    classifier.fit(x, y, batch_size=32, epochs=6, verbose=0)
    accuracy = float(np.mean(np_(classifier(x_test)).argmax(-1) == y_test))
    assert accuracy > 0.7, accuracy  # chance is 1/3


def one_sgd_step(layer_decay, weights, x, y):
    classifier = SequenceClassifier.from_backbone(CausalLM(**TINY), num_classes=3, dropout=0.0, layer_decay=layer_decay)
    classifier.set_weights(weights)
    classifier.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    return classifier


def test_layer_decay_scales_each_layers_step_exactly():
    x, y = topic_task(16, seed=2)
    base = SequenceClassifier.from_backbone(CausalLM(**TINY), num_classes=3, dropout=0.0)
    weights = base.get_weights()
    plain = one_sgd_step(None, weights, x, y)
    decayed = one_sgd_step(0.5, weights, x, y)
    plain_steps = [np_(v) - w for v, w in zip(plain.weights, weights)]
    decayed_steps = [np_(v) - w for v, w in zip(decayed.weights, weights)]
    expected = {}
    layers = decayed.backbone
    for v in layers.token_embedding.weights + layers.position_embedding.weights:
        expected[id(v)] = 0.5**3  # embeddings: decay ** (L + 1), L = 2
    for v in layers.blocks[0].weights:
        expected[id(v)] = 0.5**2
    for v in layers.blocks[1].weights:
        expected[id(v)] = 0.5
    checked = 0
    for v, p, d in zip(decayed.weights, plain_steps, decayed_steps):
        factor = expected.get(id(v), 1.0)  # final norm and head: full rate
        assert np.abs(p).max() > 0
        np.testing.assert_allclose(d, factor * p, rtol=1e-4, atol=1e-7, err_msg=v.path)
        checked += factor != 1.0
    assert checked == len(expected)


def test_layer_decay_survives_save_and_load(tmp_path):
    classifier = SequenceClassifier.from_backbone(CausalLM(**TINY), num_classes=2, layer_decay=0.7)
    classifier.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = topic_task(8, seed=3)
    classifier.fit(x, y % 2, epochs=1, verbose=0)
    classifier.save(tmp_path / "classifier.keras")
    reloaded = keras.saving.load_model(tmp_path / "classifier.keras")
    assert reloaded.layer_decay == 0.7
    np.testing.assert_allclose(np_(reloaded(x)), np_(classifier(x)), atol=1e-5)
    assert getattr(reloaded.optimizer, "_kerasllm_unscaled_apply", None) is not None  # multipliers re-applied
    reloaded.fit(x, y % 2, epochs=1, verbose=0)


def test_bad_input_is_rejected_with_the_fix():
    lm = CausalLM(**TINY)
    with pytest.raises(ValueError, match="at least two classes"):
        SequenceClassifier.from_backbone(lm, num_classes=1)
    with pytest.raises(ValueError, match="layer_decay"):
        SequenceClassifier.from_backbone(lm, num_classes=3, layer_decay=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        kerasllm.optimizers.scale_learning_rates(keras.optimizers.SGD(), [(lm.backbone.final_norm.weights[0], -1.0)])
