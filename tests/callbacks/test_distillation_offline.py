"""Offline distillation: the Distillation callback trained from a TeacherLogitsCache."""

import keras
import numpy as np
import pytest

from kerasllm.callbacks import Distillation
from kerasllm.distillation import cache_teacher_logits
from kerasllm.losses import CausalLMLoss
from kerasllm.models import CausalLM

V, T, N, B = 23, 8, 16, 4


def tiny(width, seed=0, vocabulary_size=V):
    keras.utils.set_random_seed(seed)
    model = CausalLM(vocabulary_size=vocabulary_size, num_layers=1, num_heads=2, hidden_dim=width,
                     intermediate_dim=2 * width, max_sequence_length=16)
    model(np.zeros((1, T), "int32"))
    return model


def student(vocabulary_size=V):
    model = tiny(8, seed=7, vocabulary_size=vocabulary_size)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=CausalLMLoss(),
                  jit_compile=False if keras.backend.backend() == "tensorflow" else "auto")
    return model


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x) // B

    def __getitem__(self, i):
        return self.x[i * B:(i + 1) * B], self.y[i * B:(i + 1) * B]


def data():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, V, (N, T)).astype("int32"), rng.integers(0, V, (N, T)).astype("int32")
    y[:3, -2:] = -100
    return Batches(x, y)


@pytest.mark.parametrize("kind,top_k,cached_k", [("forward_kl", None, V), ("reverse_kl", 5, 9), ("jsd", 5, 5)])
def test_cache_trains_exactly_like_the_online_teacher(tmp_path, kind, top_k, cached_k):
    teacher, dataset = tiny(16, seed=1), data()
    cache = cache_teacher_logits(teacher, dataset, top_k=cached_k, path=str(tmp_path / "cache"), verbose=0)
    online, offline = student(), student()
    np.testing.assert_array_equal(online.get_weights()[0], offline.get_weights()[0])
    settings = dict(loss=kind, temperature=2.0, alpha=0.7, top_k=top_k)
    h_online = online.fit(dataset, epochs=2, shuffle=False, verbose=0,
                          callbacks=[Distillation(teacher, **settings)]).history
    h_offline = offline.fit(cache.attach(dataset), epochs=2, shuffle=False, verbose=0,
                            callbacks=[Distillation(cache, **settings)]).history
    np.testing.assert_allclose(h_offline["distillation_loss"], h_online["distillation_loss"], rtol=1e-4, atol=1e-6)
    for a, b in zip(online.get_weights(), offline.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_validation_without_the_cache_reports_the_label_loss(tmp_path):
    teacher, dataset = tiny(16, seed=1), data()
    cache = cache_teacher_logits(teacher, dataset, top_k=4, path=str(tmp_path / "cache"), verbose=0)
    model = student()
    history = model.fit(cache.attach(dataset), validation_data=dataset, epochs=1, verbose=0,
                        callbacks=[Distillation(cache)]).history
    assert np.isfinite(history["val_loss"][0])
    np.testing.assert_allclose(history["val_loss"][0], history["val_label_loss"][0], rtol=1e-5)


def test_offline_bad_inputs_are_clear_errors(tmp_path):
    teacher, dataset = tiny(16, seed=1), data()
    cache = cache_teacher_logits(teacher, dataset, top_k=4, path=str(tmp_path / "cache"), verbose=0)
    with pytest.raises(ValueError, match="cache.attach"):
        student().fit(dataset, epochs=1, verbose=0, callbacks=[Distillation(cache)])
    with pytest.raises(ValueError, match="vocabulary"):
        student(vocabulary_size=V + 1).fit(cache.attach(dataset), epochs=1, verbose=0,
                                           callbacks=[Distillation(cache)])
    with pytest.raises(ValueError, match="exceeds the 4 tokens"):
        Distillation(cache, top_k=5)
    with pytest.raises(ValueError, match="teacher model itself"):
        Distillation(cache, features="hidden_states")
    other = Batches(np.roll(dataset.x, 1, axis=1), dataset.y)
    with pytest.raises(ValueError, match="not in the teacher-logits cache"):
        student().fit(cache.attach(other), epochs=1, verbose=0, callbacks=[Distillation(cache)])
