"""Property tests: malformed token arrays at every public entry point give a clear `ValueError`.

Hypothesis draws arrays that are wrong in one way (dtype float / bool / str, NaN, negative ids, ids
>= vocabulary, rank 0 / 1 / 3, an empty batch, sequences too long) and each entry point must raise a
`ValueError` whose message names that problem: never another exception type, never an output (so no
NaN output), never a hang. Inputs an entry point legitimately accepts (e.g. a 1-D prompt for
`generate`) are left out for that entry point.
"""

import re

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kerasllm

# One xdist worker runs this file, so its module fixtures are built once (tests/run.sh).
pytestmark = pytest.mark.xdist_group("test_input_validation")

VOCABULARY, MAX_LENGTH = 61, 16
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                    database=None)

# What the message must mention for each kind of bad input: the problem, in words a user searches for.
EXPECTED_MESSAGE = {
    "float": r"integer",
    "nan": r"integer",
    "bool": r"integer",
    "str": r"integer|tokeni[sz]e",
    "negative": r"negative",
    "too_large": r"vocabulary",
    "rank0": r"rank|shape|list of ints",
    "rank1": r"rank|shape|batch axis",
    "rank3": r"rank|shape",
    "empty": r"empty|too few|at least one",
    "too_long": r"longer|length",
}
# Every message must also say what to do about it.
FIX_WORDS = r"\b(use|build|cast|pad|tokeni[sz]e|add|give|shorten|lower|pass|remove|flatten|wrap)\b"


@st.composite
def malformed(draw, kinds):
    """`(kind, array)`: an id array of shape (batch, sequence) made wrong in the way `kind` says."""
    kind = draw(st.sampled_from(kinds))
    batch = draw(st.integers(1, 3))
    length = draw(st.integers(1, MAX_LENGTH))
    ids = np.asarray(draw(st.lists(st.integers(0, VOCABULARY - 1), min_size=batch * length,
                                   max_size=batch * length)), dtype="int32").reshape(batch, length)
    row, column = draw(st.integers(0, batch - 1)), draw(st.integers(0, length - 1))
    if kind == "float":
        ids = ids.astype(draw(st.sampled_from(["float32", "float64", "float16"])))
        if draw(st.booleans()):
            ids[row, column] += 0.5
    elif kind == "nan":
        ids = ids.astype("float32")
        ids[row, column] = np.nan
    elif kind == "bool":
        ids = ids % 2 == 0
    elif kind == "str":
        ids = ids.astype(str)
    elif kind == "negative":
        ids[row, column] = draw(st.integers(-(2**31), -1))
    elif kind == "too_large":
        ids = ids.astype("int64")
        ids[row, column] = draw(st.integers(VOCABULARY, 2**40))
    elif kind == "rank0":
        ids = ids[0, 0]
    elif kind == "rank1":
        ids = ids[0]
    elif kind == "rank3":
        ids = ids[:, :, None]
    elif kind == "empty":
        ids = ids[:0]
    elif kind == "too_long":
        extra = draw(st.integers(1, 8))
        ids = np.concatenate([ids, np.zeros((batch, MAX_LENGTH - length + extra), "int32")], axis=1)
    return kind, ids


def check_error(kind, function, *args, **kwargs):
    """`function(*args)` must raise a `ValueError` naming the problem `kind` and a fix, nothing else."""
    try:
        result = function(*args, **kwargs)
    except ValueError as error:
        message = str(error)
        assert re.search(EXPECTED_MESSAGE[kind], message, re.IGNORECASE), f"{kind}: unhelpful message {message!r}"
        assert re.search(FIX_WORDS, message, re.IGNORECASE), f"{kind}: the message names no fix: {message!r}"
        return
    except Exception as error:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{kind}: {type(error).__name__} instead of a ValueError: {error}")
    finite = "" if not isinstance(result, np.ndarray) else f" (finite: {np.isfinite(result).all()})"
    pytest.fail(f"{kind}: no error; returned {type(result).__name__}{finite}")


MODEL_KINDS = sorted(EXPECTED_MESSAGE)  # every kind is wrong for a (batch, sequence) model input


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    model = kerasllm.models.CausalLM(vocabulary_size=VOCABULARY, num_layers=2, num_heads=2, hidden_dim=16,
                                     intermediate_dim=32, max_sequence_length=MAX_LENGTH)
    model.compile(optimizer="adam", loss=kerasllm.losses.CausalLMLoss())
    model(np.zeros((1, MAX_LENGTH), "int32"))
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return kerasllm.tokenizers.CharacterTokenizer.train("abcdefghij ,.")


@SETTINGS
@given(case=malformed(MODEL_KINDS))
def test_model_call(model, case):
    kind, ids = case
    check_error(kind, model, ids)


@SETTINGS
@given(case=malformed(MODEL_KINDS))
def test_predict(model, case):
    kind, ids = case
    check_error(kind, model.predict, ids, verbose=0)


@SETTINGS
@given(case=malformed(MODEL_KINDS))
def test_fit_and_evaluate(model, case):
    kind, ids = case
    labels = np.zeros(np.shape(ids), "int32") if np.ndim(ids) else np.zeros((1, 1), "int32")
    before = [w.copy() for w in model.get_weights()]
    check_error(kind, model.fit, ids, labels, epochs=1, verbose=0)
    check_error(kind, model.evaluate, ids, labels, verbose=0)
    for a, b in zip(model.get_weights(), before):  # nothing trained on bad data
        np.testing.assert_array_equal(a, b)


@SETTINGS
@given(case=malformed([k for k in MODEL_KINDS if k != "rank1"]))  # a 1-D prompt is one sequence
def test_generate(model, case):
    kind, ids = case
    check_error(kind, model.generate, ids, max_new_tokens=2, greedy=True)


@SETTINGS
@given(case=malformed(["float", "nan", "bool", "str", "negative", "too_large", "rank0", "rank3"]))
def test_generate_with_lists(model, case):
    # Lists of lists take another path through `generate` than arrays.
    kind, ids = case
    check_error(kind, model.generate, np.asarray(ids).tolist() if np.ndim(ids) else ids.item(),
                max_new_tokens=2, greedy=True)


# The tokenizer decodes one 1-D sequence of any length; an empty one decodes to "".
@SETTINGS
@given(case=malformed(["float", "nan", "bool", "str", "negative", "too_large", "rank0", "rank3"]))
def test_tokenizer_decode(tokenizer, case):
    kind, ids = case
    if kind == "too_large":
        ids = np.full_like(ids, tokenizer.vocabulary_size)
    else:
        ids = ids % tokenizer.vocabulary_size if kind in ("rank0", "rank3") else ids
    # Flattened, so the one bad entry is in the sequence; dtype and sign are checked before the range.
    check_error(kind, tokenizer.decode, ids if kind in ("rank0", "rank3") else np.asarray(ids).reshape(-1))


# The dataset takes one 1-D token stream; too short a stream is the "empty" case.
@SETTINGS
@given(case=malformed(["float", "nan", "bool", "str", "negative", "too_large", "rank0", "rank3", "empty"]))
def test_language_modeling_dataset(case):
    kind, ids = case
    stream = ids if kind in ("rank0", "rank3") else np.asarray(ids).reshape(-1)
    if kind != "empty":  # long enough for a batch, so only the malformation is wrong
        stream = np.concatenate([stream, stream[:1].repeat(40)]) if np.ndim(stream) == 1 else stream
    check_error(kind, kerasllm.data.LanguageModelingDataset, stream, sequence_length=4, batch_size=2,
                vocabulary_size=VOCABULARY)


def test_valid_inputs_still_work(model, tokenizer):
    # The checks must not reject good data at any of these entry points.
    ids = np.random.default_rng(0).integers(0, VOCABULARY, (2, MAX_LENGTH)).astype("int32")
    logits = keras.ops.convert_to_numpy(model(ids))
    assert logits.shape == (2, MAX_LENGTH, VOCABULARY) and np.isfinite(logits).all()
    np.testing.assert_allclose(model.predict(ids, verbose=0), logits, rtol=1e-5, atol=1e-5)
    assert np.isfinite(model.evaluate(ids, ids, verbose=0))
    assert len(model.generate(ids[0, :4], max_new_tokens=2, greedy=True)) == 6
    assert tokenizer.decode(tokenizer.encode("abc")) == "abc"
    data = kerasllm.data.LanguageModelingDataset(ids.reshape(-1), sequence_length=4, batch_size=2)
    assert data[0][0].shape == (2, 4)
