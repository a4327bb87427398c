import keras
import numpy as np
import pytest
from keras import ops

from kerasllm.losses import IGNORE_INDEX
from kerasllm.losses import DistillationLoss
from kerasllm.losses import distillation

B, T, V = 3, 5, 7
KINDS = ["forward_kl", "reverse_kl", "jsd", "mse"]


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def kl(log_p, log_q):
    return (np.exp(log_p) * (log_p - log_q)).sum(-1)


def numpy_per_token(teacher, student, kind, temperature=1.0, beta=0.5):
    teacher, student = teacher.astype("float64"), student.astype("float64")
    lt, ls = log_softmax(teacher / temperature), log_softmax(student / temperature)
    if kind == "forward_kl":
        value = kl(lt, ls)
    elif kind == "reverse_kl":
        value = kl(ls, lt)
    elif kind == "jsd":
        m = np.logaddexp(np.log(beta) + lt, np.log(1 - beta) + ls)  # log(beta P_t + (1 - beta) P_s)
        value = beta * kl(lt, m) + (1 - beta) * kl(ls, m)
    else:
        value = ((student - teacher) ** 2).mean(-1) / temperature**2
    return value * temperature**2


def numpy_mean(per_token, mask, weights=None):
    w = np.ones((B, T)) if weights is None else np.broadcast_to(weights.reshape(B, -1), (B, T))
    return (per_token * w * mask).sum() / mask.sum()


def make_batch(scale=3.0):
    teacher = (np.random.randn(B, T, V) * scale).astype("float32")
    student = (np.random.randn(B, T, V) * scale).astype("float32")
    labels = np.random.randint(0, V, (B, T))
    labels[0, -2:] = IGNORE_INDEX
    labels[2, :3] = IGNORE_INDEX
    return teacher, student, labels != IGNORE_INDEX


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weight_shape", [None, (B,), (B, T)])
def test_matches_numpy_with_temperature_mask_and_weights(kind, weight_shape):
    teacher, student, mask = make_batch()
    weights = None if weight_shape is None else np.random.uniform(0.2, 2.0, weight_shape).astype("float32")
    expected = numpy_mean(numpy_per_token(teacher, student, kind, 2.0, 0.3), mask, weights)

    loss = DistillationLoss(kind=kind, temperature=2.0, beta=0.3)
    np.testing.assert_allclose(to_numpy(loss(teacher, student, sample_weight=weights, mask=mask)), expected, rtol=1e-5)
    functional = distillation.distillation_loss(
        teacher, student, kind=kind, temperature=2.0, beta=0.3, mask=mask, sample_weight=weights
    )
    np.testing.assert_allclose(to_numpy(functional), expected, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_other_reductions(kind):
    teacher, student, mask = make_batch()
    per_token = numpy_per_token(teacher, student, kind) * mask
    none = DistillationLoss(kind=kind, reduction="none")(teacher, student, mask=mask)
    np.testing.assert_allclose(to_numpy(none), per_token, rtol=1e-5, atol=1e-6)
    total = DistillationLoss(kind=kind, reduction="sum")(teacher, student, mask=mask)
    np.testing.assert_allclose(to_numpy(total), per_token.sum(), rtol=1e-5)


def test_jsd_end_points_are_forward_and_reverse_kl():
    teacher, student, mask = make_batch()
    for beta, kind in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
        jsd = distillation.jsd(teacher, student, beta=beta, temperature=1.5, mask=mask)
        kl_value = distillation.distillation_loss(teacher, student, kind=kind, temperature=1.5, mask=mask)
        np.testing.assert_allclose(to_numpy(jsd), to_numpy(kl_value), rtol=1e-6)
    # Close to the ends it tends to beta * KL(teacher || student), as GKD says.
    small = to_numpy(distillation.jsd(teacher, student, beta=1e-4, mask=mask)) / 1e-4
    np.testing.assert_allclose(small, to_numpy(distillation.forward_kl(teacher, student, mask=mask)), rtol=1e-2)


def test_masked_positions_never_change_the_loss():
    teacher, student, mask = make_batch()
    noisy_teacher = np.where(mask[..., None], teacher, 1e3 * np.random.randn(B, T, V)).astype("float32")
    noisy_student = np.where(mask[..., None], student, -1e3 * np.random.randn(B, T, V)).astype("float32")
    for kind in KINDS:
        a = distillation.distillation_loss(teacher, student, kind=kind, mask=mask)
        b = distillation.distillation_loss(noisy_teacher, noisy_student, kind=kind, mask=mask)
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_large_logits_are_finite_and_exact(kind):
    teacher, student, mask = make_batch(scale=1e4)
    value = to_numpy(DistillationLoss(kind=kind, temperature=2.0)(teacher, student, mask=mask))
    assert np.isfinite(value)
    expected = numpy_mean(numpy_per_token(teacher, student, kind, 2.0), mask)
    np.testing.assert_allclose(value, expected, rtol=1e-4)
    same = to_numpy(DistillationLoss(kind=kind)(teacher, teacher, mask=mask))
    assert np.isfinite(same) and abs(same) < 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_inputs_computed_in_float32(kind):
    teacher, student, mask = make_batch()
    t16, s16 = ops.cast(teacher, "bfloat16"), ops.cast(student, "bfloat16")
    value = DistillationLoss(kind=kind, temperature=2.0)(t16, s16, mask=mask)
    assert to_numpy(value).dtype == np.float32
    rounded = [to_numpy(ops.cast(x, "float32")) for x in (t16, s16)]
    expected = numpy_mean(numpy_per_token(*rounded, kind, 2.0), mask)
    np.testing.assert_allclose(to_numpy(value), expected, rtol=1e-5)


def test_nothing_counted_gives_zero():
    teacher, student, _ = make_batch()
    value = DistillationLoss()(teacher, student, mask=np.zeros((B, T), bool))
    assert float(to_numpy(value)) == 0.0


def test_config_round_trip_and_serialization():
    loss = DistillationLoss(kind="jsd", temperature=3.0, beta=0.25, reduction="sum", name="kd")
    restored = DistillationLoss.from_config(loss.get_config())
    assert (restored.kind, restored.temperature, restored.beta, restored.reduction, restored.name) == (
        "jsd", 3.0, 0.25, "sum", "kd"
    )
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, DistillationLoss) and again.get_config() == loss.get_config()


def test_usable_as_a_compiled_keras_loss():
    # Teacher logits as y: Keras calls the loss with (y_true, y_pred, sample_weight).
    teacher, _, _ = make_batch()
    x = np.random.randn(B, T, 4).astype("float32")
    model = keras.Sequential([keras.Input((T, 4)), keras.layers.Dense(V)])
    model.compile(optimizer="sgd", loss=DistillationLoss(temperature=2.0))
    expected = numpy_mean(numpy_per_token(teacher, to_numpy(model(x)), "forward_kl", 2.0), np.ones((B, T)))
    np.testing.assert_allclose(model.evaluate(x, teacher, verbose=0), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="kl"), "Unknown distillation loss"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(beta=1.5), "beta"),
        (dict(beta=-0.1), "beta"),
        (dict(reduction="avg"), "reduction"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistillationLoss(**kwargs)


def test_shape_mismatches_are_clear():
    teacher, student, _ = make_batch()
    with pytest.raises(ValueError, match="teacher's logits have 9 entries and the student's 7"):
        DistillationLoss()(np.zeros((B, T, 9), "float32"), student)
    with pytest.raises(ValueError, match="sequence length"):
        DistillationLoss()(teacher[:, :-1], student)
    with pytest.raises(ValueError, match="same rank"):
        DistillationLoss()(teacher[0], student)


def numpy_top_k_with_rest(logits, indices):
    """The top-k tokens' log-probabilities (over the whole vocabulary) and log(mass on all others)."""
    kept = np.take_along_axis(log_softmax(logits.astype("float64")), indices, -1)
    rest = np.log1p(-np.exp(kept).sum(-1, keepdims=True))
    return np.concatenate([kept, rest], -1)


@pytest.mark.parametrize("kind", KINDS)
def test_top_k_matches_numpy_top_k_plus_the_rest(kind):
    teacher, student, mask = make_batch()
    k = 3
    indices = np.argsort(-teacher, axis=-1)[..., :k]
    if kind == "mse":  # the logits of the teacher's top-k tokens
        top_teacher = np.take_along_axis(teacher, indices, -1)
        top_student = np.take_along_axis(student, indices, -1)
    else:  # distributions over k + 1 outcomes: the top-k tokens and "any other token"
        top_teacher = numpy_top_k_with_rest(teacher, indices)
        top_student = numpy_top_k_with_rest(student, indices)
    expected = numpy_mean(numpy_per_token(top_teacher, top_student, kind, 2.0, 0.3), mask)
    loss = DistillationLoss(kind=kind, temperature=2.0, beta=0.3, top_k=k)
    np.testing.assert_allclose(to_numpy(loss(teacher, student, mask=mask)), expected, rtol=1e-5)
    # The whole vocabulary as top-k is the plain loss.
    full = DistillationLoss(kind=kind, temperature=2.0, beta=0.3, top_k=V)(teacher, student, mask=mask)
    plain = DistillationLoss(kind=kind, temperature=2.0, beta=0.3)(teacher, student, mask=mask)
    np.testing.assert_allclose(to_numpy(full), to_numpy(plain), rtol=1e-5)


def test_top_k_still_teaches_the_mass_outside_the_top_k():
    """Renormalizing both sides over the top-k set would make this loss zero: the student ranks the
    top-k tokens like the teacher but puts most of its mass elsewhere."""
    teacher = np.full((1, 1, V), -10.0, "float32")
    teacher[..., :3] = [3.0, 2.0, 1.0]
    student = np.full((1, 1, V), 4.0, "float32")
    student[..., :3] = [3.0, 2.0, 1.0]
    loss = to_numpy(DistillationLoss(kind="forward_kl", top_k=3)(teacher, student))
    indices = np.arange(3).reshape(1, 1, 3)
    expected = numpy_per_token(
        numpy_top_k_with_rest(teacher, indices), numpy_top_k_with_rest(student, indices), "forward_kl"
    )[0, 0]
    assert loss > 1.0
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize("top_k", [0, 2.5, True])
def test_bad_top_k(top_k):
    with pytest.raises(ValueError, match="top_k"):
        DistillationLoss(top_k=top_k)


def test_top_k_larger_than_vocabulary():
    teacher, student, _ = make_batch()
    with pytest.raises(ValueError, match="larger than the vocabulary"):
        DistillationLoss(top_k=V + 1)(teacher, student)
