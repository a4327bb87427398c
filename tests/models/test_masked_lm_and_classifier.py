"""MaskedLM and SequenceClassifier: bidirectionality, training, save/load and bad input, on every backend."""

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.models import CausalLM, MaskedLM, SequenceClassifier

TINY = dict(vocabulary_size=23, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)


def np_(x):
    return ops.convert_to_numpy(x)


def test_masked_lm_sees_both_directions_and_respects_padding():
    model = MaskedLM(**TINY)
    x = np.random.default_rng(0).integers(3, 23, (2, 8)).astype("int32")
    x2 = x.copy()
    x2[:, 6] = (x2[:, 6] + 3) % 23
    assert np.abs(np_(model(x2))[:, 0] - np_(model(x))[:, 0]).max() > 1e-6
    mask = np.array([[1] * 5 + [0] * 3] * 2, bool)
    a = np_(model({"token_ids": x, "padding_mask": mask}))
    b = np_(model({"token_ids": x2, "padding_mask": mask}))
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)


def test_masked_lm_learns_from_masked_batches():
    tokens = np.tile(np.arange(3, 11, dtype="int32"), 400)
    data = kerasllm.data.MaskedLanguageModelingDataset(
        tokens, sequence_length=8, batch_size=16, mask_token_id=2, vocabulary_size=23, special_token_ids=(0, 1, 2),
        mask_probability=0.3, seed=0,
    )
    model = MaskedLM(**TINY)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=kerasllm.losses.MaskedLMLoss(),
                  metrics=[kerasllm.metrics.MaskedAccuracy()])
    history = model.fit(data, epochs=4, verbose=0)
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]


@pytest.mark.parametrize("backbone_class, pooling", [(CausalLM, "last"), (MaskedLM, "mean"), (MaskedLM, "first")])
def test_classifier_pools_real_tokens_and_learns(backbone_class, pooling):
    lm = backbone_class(**TINY)
    classifier = SequenceClassifier.from_backbone(lm, num_classes=3, pooling=pooling, dropout=0.0)
    assert classifier.backbone is lm.backbone  # shares the pre-trained weights
    rng = np.random.default_rng(0)
    x = rng.integers(3, 23, (48, 10)).astype("int32")
    y = (x[:, 0] % 3).astype("int32")  # the class is written in the first token
    mask = np.ones_like(x, bool)
    mask[::2, 7:] = False  # padding must not change the prediction
    padded = x.copy()
    padded[~mask] = 0
    out_a = np_(classifier({"token_ids": padded, "padding_mask": mask}))
    padded[~mask] = 5
    out_b = np_(classifier({"token_ids": padded, "padding_mask": mask}))
    np.testing.assert_allclose(out_a, out_b, atol=1e-5)
    assert out_a.shape == (48, 3)
    classifier.compile(optimizer=keras.optimizers.Adam(3e-3),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = classifier.fit({"token_ids": x, "padding_mask": np.ones_like(x, bool)}, y, epochs=25, batch_size=16,
                             verbose=0)
    assert history.history["accuracy"][-1] > 0.8


def test_save_load_in_fresh_process(tmp_path, run_in_fresh_process):
    x = np.random.default_rng(1).integers(0, 23, (2, 6)).astype("int32")
    np.save(tmp_path / "x.npy", x)
    models = {"mlm": MaskedLM(**TINY, position_embedding="rotary", normalization="rmsnorm")}
    models["clf"] = SequenceClassifier.from_backbone(CausalLM(**TINY), num_classes=4)
    for key, model in models.items():
        model.save(tmp_path / f"{key}.keras")
        np.save(tmp_path / f"{key}_expected.npy", np_(model(x)))
    run_in_fresh_process(
        "import keras, numpy as np, kerasllm\n"
        f"d = {str(tmp_path)!r}\n"
        "x = np.load(d + '/x.npy')\n"
        "for key in ('mlm', 'clf'):\n"
        "    m = keras.saving.load_model(d + f'/{key}.keras')\n"
        "    np.testing.assert_array_equal(keras.ops.convert_to_numpy(m(x)), np.load(d + f'/{key}_expected.npy'))\n"
    )


def test_classifier_bad_arguments():
    lm = CausalLM(**TINY)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        SequenceClassifier.from_backbone(lm, num_classes=1)
    with pytest.raises(ValueError, match="Unknown pooling"):
        SequenceClassifier.from_backbone(lm, num_classes=2, pooling="max")
    with pytest.raises(ValueError, match="TransformerBackbone"):
        SequenceClassifier(backbone=keras.layers.Dense(3), num_classes=2)
