import keras
import numpy as np
from keras import ops

from kerasllm.metrics import MaskedAccuracy


def test_matches_numpy_over_updates_with_weights():
    metric = MaskedAccuracy()
    correct, count = 0.0, 0.0
    for _ in range(3):
        logits = np.random.randn(3, 5, 4).astype("float32")
        labels = np.random.randint(0, 4, (3, 5))
        labels[np.random.rand(3, 5) < 0.4] = -100
        weights = np.random.uniform(0.5, 2.0, (3,)).astype("float32")
        metric.update_state(labels, logits, sample_weight=weights)
        w = (labels != -100) * weights[:, None]
        correct += ((logits.argmax(-1) == labels) * w).sum()
        count += w.sum()
    np.testing.assert_allclose(float(ops.convert_to_numpy(metric.result())), correct / count, rtol=1e-6)


def test_ignored_positions_do_not_count():
    metric = MaskedAccuracy()
    logits = np.eye(4, dtype="float32")[[[2, 0, 1]]]  # predicts 2, 0, 1
    metric.update_state(np.array([[2, -100, 3]]), logits)
    assert float(ops.convert_to_numpy(metric.result())) == 0.5
    metric.reset_state()
    assert float(ops.convert_to_numpy(metric.result())) == 0.0


def test_default_name_and_config_round_trip():
    metric = MaskedAccuracy()
    assert metric.name == "token_accuracy"
    restored = keras.metrics.deserialize(keras.metrics.serialize(MaskedAccuracy(ignore_index=0)))
    assert type(restored) is MaskedAccuracy and restored.ignore_index == 0
