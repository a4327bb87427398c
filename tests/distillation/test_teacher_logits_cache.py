import os
import pickle

import keras
import numpy as np
import pytest

from kerasllm.data import LanguageModelingDataset
from kerasllm.data import MaskedLanguageModelingDataset
from kerasllm.distillation import TeacherLogitsCache
from kerasllm.distillation import cache_teacher_logits
from kerasllm.models import CausalLM

# One xdist worker runs this file, so its module fixtures are built once (tests/run.sh).
pytestmark = pytest.mark.xdist_group("test_teacher_logits_cache")

V, T, B = 61, 8, 4


@pytest.fixture(scope="module")
def teacher():
    # One teacher for the whole file: its compiled predict function is reused by every test. Module
    # fixtures are made before the autouse seed, so seed here for the same weights in every run.
    keras.utils.set_random_seed(0)
    return CausalLM(vocabulary_size=V, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
                    max_sequence_length=16)


def stream(num_windows, seed=0):
    return np.random.default_rng(seed).integers(0, V, num_windows * (T + 1))


def log_softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def teacher_log_softmax(teacher, x):
    return log_softmax(keras.ops.convert_to_numpy(teacher(x, training=False)))


def assert_top_k(log_probs, indices, full, top_k):
    """`(log_probs, indices)` are the top-k of the reference log-softmax `full` (B, T, V), descending."""
    assert log_probs.shape == indices.shape == full.shape[:2] + (top_k,)
    assert log_probs.dtype == np.float32 and indices.dtype == np.int32
    ranked = np.sort(full, axis=-1)[..., ::-1]
    order = np.argsort(-full, axis=-1, kind="stable")[..., :top_k]
    np.testing.assert_allclose(log_probs, ranked[..., :top_k], atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(full, indices, -1), log_probs, atol=1e-5)
    assert np.all(np.diff(np.sort(indices, -1), axis=-1) > 0)  # no id twice at a position
    # Ids match exactly, except where two log-probabilities tie within float32 rounding (either order
    # is right there).
    gaps = np.concatenate([ranked[..., :-1] - ranked[..., 1:], np.full(full.shape[:2] + (1,), np.inf)], -1)
    after = gaps[..., :top_k]
    before = np.concatenate([np.full(full.shape[:2] + (1,), np.inf), gaps[..., : top_k - 1]], -1)
    tied = np.minimum(before, after) < 1e-5
    assert np.all((indices == order) | tied) and not tied.all()


class Batches(keras.utils.PyDataset):
    """A hand-made dataset: fixed batches, no `set_position`."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches
        self.ends = 0

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]

    def on_epoch_end(self):
        self.ends += 1


def test_lookup_is_the_top_k_of_the_teachers_log_softmax(teacher, tmp_path):
    data = LanguageModelingDataset(stream(12), T, B, shuffle=False)
    cache = cache_teacher_logits(teacher, data, top_k=5, path=tmp_path / "cache", verbose=0)
    assert isinstance(cache, TeacherLogitsCache)
    assert (cache.top_k, cache.vocabulary_size, cache.sequence_length, cache.num_sequences) == (5, V, T, 12)
    assert cache.path == str(tmp_path / "cache") and cache.dtype == "float32"
    for index in range(len(data)):
        x, _ = data[index]
        log_probs, indices = cache.lookup(x)
        assert_top_k(log_probs, indices, teacher_log_softmax(teacher, x), 5)
        assert np.all(np.diff(log_probs, axis=-1) <= 0)


def test_top_k_equal_to_vocabulary_keeps_the_whole_log_softmax(teacher, tmp_path):
    data = LanguageModelingDataset(stream(8), T, B, shuffle=False)
    cache = cache_teacher_logits(teacher, data, top_k=V, path=tmp_path / "cache", verbose=0)
    x, _ = data[1]
    log_probs, indices = cache.lookup(x)
    assert np.all(np.sort(indices, axis=-1) == np.arange(V))  # a permutation of the vocabulary
    full = np.empty((B, T, V), dtype=np.float32)
    np.put_along_axis(full, indices, log_probs, axis=-1)
    np.testing.assert_allclose(full, teacher_log_softmax(teacher, x), atol=1e-5)
    np.testing.assert_allclose(np.exp(full).sum(-1), 1.0, atol=1e-5)


def test_lookup_finds_shuffled_batches_in_every_epoch(teacher, tmp_path):
    # 14 windows in batches of 4: each shuffled epoch drops a different 2 windows.
    data = LanguageModelingDataset(stream(14, seed=3), T, B, seed=7)
    cache = cache_teacher_logits(teacher, data, top_k=3, path=tmp_path / "cache", verbose=0)
    assert cache.num_sequences == 14
    seen = set()
    for epoch in range(4):
        for index in range(len(data)):
            x, _ = data[index]
            log_probs, indices = cache.lookup(x)
            seen.update(map(tuple, x))
        assert_top_k(log_probs, indices, teacher_log_softmax(teacher, x), 3)
        data.on_epoch_end()
    assert len(seen) > 12  # the epochs did use windows that one epoch leaves out


def test_identical_rows_share_one_entry(teacher, tmp_path):
    rows = np.random.default_rng(0).integers(0, V, (3, T)).astype("int32")
    first = np.stack([rows[0], rows[1], rows[0], rows[2]])
    second = np.stack([rows[2], rows[1], rows[1], rows[0]])
    cache = cache_teacher_logits(teacher, Batches([first, second]), top_k=4, path=tmp_path / "c", verbose=1)
    assert cache.num_sequences == 3
    log_probs, indices = cache.lookup(second)
    assert_top_k(log_probs, indices, teacher_log_softmax(teacher, second), 4)


def test_iterable_of_batches_with_dicts_grows_the_files(teacher, tmp_path):
    # A generator has no length: the files start at 16 batches and must grow for 20.
    rng = np.random.default_rng(1)
    batches = [
        {"token_ids": rng.integers(0, V, (B, T)).astype("int32"), "padding_mask": np.ones((B, T), "int32")}
        for _ in range(20)
    ]
    cache = cache_teacher_logits(teacher, (({**b}, b["token_ids"]) for b in batches), top_k=2,
                                 path=tmp_path / "c", verbose=1)
    assert cache.num_sequences == 80
    assert np.load(tmp_path / "c" / "log_probs.npy", mmap_mode="r").shape == (80, T, 2)
    for batch in (batches[0], batches[19]):
        log_probs, indices = cache.lookup(batch["token_ids"])
        assert_top_k(log_probs, indices, teacher_log_softmax(teacher, batch["token_ids"]), 2)


def test_attach_adds_the_teacher_to_each_batch(teacher, tmp_path):
    data = LanguageModelingDataset(stream(12), T, B, seed=2)
    cache = cache_teacher_logits(teacher, data, top_k=3, path=tmp_path / "cache", verbose=0)
    train = cache.attach(data)
    assert isinstance(train, keras.utils.PyDataset)
    assert len(train) == len(data) == 3 and train.batches_per_epoch == 3
    assert (train.vocabulary_size, train.sequence_length) == (data.vocabulary_size, T)
    inputs, y = train[1]
    expected_x, expected_y = data[1]
    assert sorted(inputs) == ["teacher_indices", "teacher_log_probs", "token_ids"]
    np.testing.assert_array_equal(inputs["token_ids"], expected_x)
    np.testing.assert_array_equal(y, expected_y)
    log_probs, indices = cache.lookup(expected_x)
    np.testing.assert_array_equal(inputs["teacher_log_probs"], log_probs)
    np.testing.assert_array_equal(inputs["teacher_indices"], indices)
    # Epochs and resume positions are the wrapped dataset's.
    train.on_epoch_end()
    assert data.epoch == 1
    train.set_position(3, 1)
    assert (data.epoch, data.start_batch, len(train)) == (3, 1, 2)
    np.testing.assert_array_equal(train[0][0]["token_ids"], data[0][0])


def test_attach_reads_the_next_batch_ahead_and_keeps_the_stored_dtype(teacher, tmp_path):
    data = LanguageModelingDataset(stream(12), T, B, seed=2)
    cache = cache_teacher_logits(teacher, data, top_k=3, path=tmp_path / "cache", dtype="float16", verbose=0)
    train = cache.attach(data)
    assert train.prefetch and train.workers == 1 and not cache.attach(data, prefetch=False).prefetch
    assert not cache.attach(LanguageModelingDataset(stream(12), T, B, workers=3)).prefetch  # Keras reads ahead
    with pytest.raises(ValueError, match="`prefetch` must be True or False"):
        cache.attach(data, prefetch=1)

    def expected(i):
        x, y = data[i]
        return x, y, *cache.lookup(x)

    for epoch in range(2):
        for i in (0, 1, 2, 1):  # in order, then back: a read-ahead of the wrong batch is not used
            inputs, y = train[i]
            x, y_ref, log_probs, indices = expected(i)
            assert inputs["teacher_log_probs"].dtype == np.float16  # the callback casts in the step
            np.testing.assert_array_equal(inputs["token_ids"], x)
            np.testing.assert_array_equal(y, y_ref)
            np.testing.assert_array_equal(inputs["teacher_log_probs"].astype(np.float32), log_probs)
            np.testing.assert_array_equal(inputs["teacher_indices"], indices)
        train.on_epoch_end()  # reshuffles: the batch read ahead from the old order is dropped
    train.set_position(5, 1)
    np.testing.assert_array_equal(train[0][0]["token_ids"], data[0][0])
    pickle.loads(pickle.dumps(train))[0]  # for multiprocessing: no thread or future inside


def test_attach_keeps_sample_weights_dicts_and_x_only(teacher, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, V, (B, T)).astype("int32")
    y = rng.integers(0, V, (B, T)).astype("int32")
    weights = rng.random(B).astype("float32")
    cache = cache_teacher_logits(teacher, Batches([x]), top_k=2, path=tmp_path / "c", verbose=0)
    log_probs, _ = cache.lookup(x)

    only_x = cache.attach(Batches([x]))
    assert not hasattr(only_x, "set_position") and not hasattr(only_x, "batches_per_epoch")
    (inputs,) = only_x[0]
    assert sorted(inputs) == ["teacher_indices", "teacher_log_probs", "token_ids"]

    weighted = cache.attach(Batches([(x, y, weights)]))
    inputs, labels, sample_weight = weighted[0]
    np.testing.assert_array_equal(sample_weight, weights)
    np.testing.assert_array_equal(labels, y)

    dicts = Batches([({"token_ids": x, "padding_mask": np.ones_like(x)}, y)])
    wrapped = cache.attach(dicts)
    inputs, _ = wrapped[0]
    assert sorted(inputs) == ["padding_mask", "teacher_indices", "teacher_log_probs", "token_ids"]
    np.testing.assert_array_equal(inputs["teacher_log_probs"], log_probs)
    wrapped.on_epoch_end()
    assert dicts.ends == 1


def test_load_reopens_the_same_cache_memory_mapped(teacher, tmp_path):
    data = LanguageModelingDataset(stream(8), T, B, shuffle=False)
    cache = cache_teacher_logits(teacher, data, top_k=4, path=tmp_path / "cache", verbose=0)
    again = TeacherLogitsCache.load(tmp_path / "cache")
    assert again is not cache
    for name in ("top_k", "vocabulary_size", "sequence_length", "num_sequences", "path", "dtype"):
        assert getattr(again, name) == getattr(cache, name), name
    assert again.teacher == "CausalLM"
    assert isinstance(again._log_probs, np.memmap) and again._log_probs.mode == "r"
    unpickled = pickle.loads(pickle.dumps(again))  # reopens by path, for multiprocessing workers
    x, _ = data[1]
    for other in (again, unpickled):
        for a, b in zip(cache.lookup(x), other.lookup(x)):
            np.testing.assert_array_equal(a, b)


def test_float16_storage(teacher, tmp_path):
    data = LanguageModelingDataset(stream(8), T, B, shuffle=False)
    full = cache_teacher_logits(teacher, data, top_k=V, path=tmp_path / "f32", verbose=0)
    half = cache_teacher_logits(teacher, data, top_k=V, path=tmp_path / "f16", dtype="float16", verbose=0)
    assert half.dtype == "float16"
    assert np.load(tmp_path / "f16" / "log_probs.npy", mmap_mode="r").dtype == np.float16
    size = lambda name: os.path.getsize(tmp_path / name / "log_probs.npy")
    assert size("f16") < 0.55 * size("f32")
    x, _ = data[0]
    log_probs, indices = half.lookup(x)
    expected, expected_indices = full.lookup(x)
    assert log_probs.dtype == np.float32
    np.testing.assert_allclose(log_probs, expected, rtol=1e-3)
    np.testing.assert_array_equal(indices, expected_indices)


def test_lookup_of_other_data_names_the_cache_and_the_fix(teacher, tmp_path):
    data = LanguageModelingDataset(stream(8), T, B, shuffle=False)
    cache = cache_teacher_logits(teacher, data, top_k=2, path=tmp_path / "cache", verbose=0)
    x, _ = data[0]
    other = x.copy()
    other[2, 3] = (other[2, 3] + 1) % V
    with pytest.raises(ValueError, match=r"1 of 4 rows .*first: row 2.*cache.*dataset differs") as error:
        cache.lookup(other)
    assert str(tmp_path / "cache") in str(error.value)
    with pytest.raises(ValueError, match=r"sequence length 6.*sequence_length 8"):
        cache.lookup(x[:, :6])
    with pytest.raises(ValueError, match="int array"):
        cache.lookup(x.astype("float32"))
    with pytest.raises(ValueError, match="length 6.*holds length 8"):
        cache.attach(LanguageModelingDataset(stream(8), 6, B))
    with pytest.raises(ValueError, match="dataset differs"):
        cache.attach(LanguageModelingDataset(stream(8, seed=9), T, B))[0]


def test_masked_language_modeling_data_that_changes_per_epoch_is_refused(teacher, tmp_path):
    data = MaskedLanguageModelingDataset(stream(8), T, B, mask_token_id=0, vocabulary_size=V)
    with pytest.raises(ValueError, match="differently in every epoch.*dynamic_masking=False"):
        cache_teacher_logits(teacher, data, top_k=2, path=tmp_path / "cache", verbose=0)
    fixed = MaskedLanguageModelingDataset(stream(8), T, B, mask_token_id=0, vocabulary_size=V, shuffle=False,
                                          dynamic_masking=False)
    cache = cache_teacher_logits(teacher, fixed, top_k=2, path=tmp_path / "cache", verbose=0)
    train = cache.attach(fixed)
    for epoch in range(2):
        assert train[1][0]["teacher_indices"].shape == (B, T, 2)  # found again in the second epoch
        train.on_epoch_end()


class Unbuilt(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(V)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"top_k": 0}, "top_k.*>= 1"),
        ({"top_k": 2.0}, "top_k.*int"),
        ({"top_k": True}, "top_k.*int"),
        ({"top_k": V + 1}, f"more than the teacher's vocabulary of {V}"),
        ({"dtype": "bfloat16"}, "dtype.*'float32' or 'float16'"),
        ({"dataset": []}, "dataset is empty"),
        ({"dataset": Batches([])}, "dataset is empty"),
        ({"dataset": 3}, "iterable of batches"),
        ({"dataset": [np.zeros((B, T), "float32")]}, "int array"),
        ({"dataset": [np.zeros((B, T), "int32"), np.zeros((B, 4), "int32")]}, "Batch 1 has sequence length 4"),
        ({"teacher": Unbuilt()}, "not built"),
        ({"teacher": "gpt2"}, "keras.Model"),
        ({"teacher": "pooled"}, r"logits tensor.*\(4, 61\)"),
        ({"teacher": "nan"}, "batch 0 hold NaN"),
    ],
)
def test_bad_arguments_raise(teacher, tmp_path, kwargs, message):
    if kwargs.get("teacher") == "pooled":
        kwargs["teacher"] = keras.Sequential([
            keras.Input((T,), dtype="int32"), keras.layers.Embedding(V, 4), keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(V),
        ])
    if kwargs.get("teacher") == "nan":
        kwargs["teacher"] = keras.Sequential([
            keras.Input((T,), dtype="int32"), keras.layers.Embedding(V, V),
            keras.layers.Lambda(lambda h: h / 0.0 * 0.0),
        ])
    arguments = {"teacher": teacher, "dataset": [np.zeros((B, T), "int32")], "top_k": 2,
                 "path": tmp_path / "cache", "verbose": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        cache_teacher_logits(**arguments)
    assert os.listdir(tmp_path) == []  # nothing written, no temporary folder left


def test_existing_cache_needs_overwrite_and_other_folders_are_kept(teacher, tmp_path):
    batch = np.random.default_rng(4).integers(0, V, (B, T)).astype("int32")
    path = tmp_path / "cache"
    cache_teacher_logits(teacher, [batch], top_k=2, path=path, verbose=0)
    with pytest.raises(ValueError, match="already exists.*overwrite=True"):
        cache_teacher_logits(teacher, [batch], top_k=3, path=path, verbose=0)
    assert TeacherLogitsCache.load(path).top_k == 2
    assert cache_teacher_logits(teacher, [batch], top_k=3, path=path, overwrite=True, verbose=0).top_k == 3
    assert TeacherLogitsCache.load(path).top_k == 3
    assert sorted(os.listdir(tmp_path)) == ["cache"]  # no temporary or old folder left behind
    assert sorted(os.listdir(path)) == ["cache.json", "hashes.npy", "indices.npy", "log_probs.npy"]

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a teacher-logits cache"):
        cache_teacher_logits(teacher, [batch], top_k=2, path=other, overwrite=True, verbose=0)
    assert (other / "keep.txt").read_text() == "mine"


def _truncate(file):
    with open(file, "r+b") as f:
        f.truncate(os.path.getsize(file) - 7)


def _wrong_shape(file):
    array = np.load(file)
    np.save(file, np.resize(array, (len(array) - 1, *array.shape[1:])))


def _wrong_dtype(file):
    np.save(file, np.load(file).astype(np.int64))


@pytest.mark.parametrize(
    "name, damage",
    [
        ("cache.json", os.remove),
        ("cache.json", lambda f: open(f, "w").write("{not json")),
        ("cache.json", lambda f: open(f, "w").write('{"top_k": 2}')),
        ("log_probs.npy", os.remove),
        ("log_probs.npy", _truncate),
        ("indices.npy", _truncate),
        ("hashes.npy", _wrong_shape),
        ("log_probs.npy", _wrong_shape),
        ("indices.npy", _wrong_dtype),
        ("indices.npy", lambda f: open(f, "wb").write(b"garbage")),
    ],
)
def test_damaged_files_are_named(teacher, tmp_path, name, damage):
    batch = np.random.default_rng(5).integers(0, V, (B, T)).astype("int32")
    path = tmp_path / "cache"
    cache_teacher_logits(teacher, [batch, batch + 0], top_k=2, path=path, verbose=0)
    damage(str(path / name))
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        TeacherLogitsCache.load(path)


def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*cache_teacher_logits"):
        TeacherLogitsCache.load(tmp_path / "nowhere")


def test_dict_input_teacher_gets_token_ids_and_a_padding_mask(tmp_path):
    # Like KerasHub's GPT2CausalLM: a functional model whose `input` is a dict. (KerasHub itself is
    # left out here: importing it takes ~10 s.)
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    hidden = keras.layers.Embedding(V, 8)(token_ids)
    hidden = hidden * keras.ops.expand_dims(keras.ops.cast(padding_mask, "float32"), -1)
    logits = keras.layers.Dense(V)(keras.layers.Dense(8, activation="tanh")(hidden))
    model = keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, logits)
    data = LanguageModelingDataset(stream(4), T, B, shuffle=False)
    cache = cache_teacher_logits(model, data, top_k=3, path=tmp_path / "cache", verbose=0)
    assert cache.teacher == "Functional"
    x, _ = data[0]
    logits = keras.ops.convert_to_numpy(model({"token_ids": x, "padding_mask": np.ones_like(x)}, training=False))
    log_probs, indices = cache.lookup(x)
    assert_top_k(log_probs, indices, log_softmax(logits), 3)
