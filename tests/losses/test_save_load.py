import keras
import numpy as np
from keras import ops

import kerasllm.losses
import kerasllm.metrics
import kerasllm.optimizers


def test_compiled_model_save_load_round_trip(tmp_path):
    vocabulary, length = 11, 6
    inputs = keras.Input((length,), dtype="int32")
    hidden = keras.layers.Embedding(vocabulary, 8, name="embedding")(inputs)
    hidden = keras.layers.LayerNormalization(name="final_norm")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(vocabulary, name="head")(hidden))
    model.compile(
        optimizer=kerasllm.optimizers.create_optimizer(1e-2, total_steps=20, warmup_steps=2),
        loss=kerasllm.losses.CausalLMLoss(label_smoothing=0.1),
        metrics=[kerasllm.metrics.Perplexity(), kerasllm.metrics.MaskedAccuracy()],
    )
    x = np.random.randint(0, vocabulary, (8, length))
    y = np.where(np.random.rand(8, length) < 0.3, -100, np.random.randint(0, vocabulary, (8, length)))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    before = model.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)

    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)

    assert isinstance(restored.loss, kerasllm.losses.CausalLMLoss)
    assert restored.loss.label_smoothing == 0.1
    assert isinstance(restored.optimizer, kerasllm.optimizers.AdamW)
    assert restored.optimizer.no_decay == ("bias", "norm", "embedding")
    assert int(ops.convert_to_numpy(restored.optimizer.iterations)) == 2
    np.testing.assert_allclose(
        float(ops.convert_to_numpy(restored.optimizer.gradient_norm)),
        float(ops.convert_to_numpy(model.optimizer.gradient_norm)),
        rtol=1e-6,
    )
    after = restored.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)
    assert set(after) == {"loss", "perplexity", "token_accuracy"}
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5)
