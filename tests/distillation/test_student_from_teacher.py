"""`kerasllm.distillation.student_from_teacher`: a shallower student that starts from the teacher's blocks."""

import keras
import numpy as np
import pytest

import kerasllm
from kerasllm.distillation import student_from_teacher

TINY = dict(vocabulary_size=61, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)
ARCHITECTURES = {
    "gpt2_untied": (kerasllm.models.CausalLM, dict(tie_word_embeddings=False)),
    "llama": (kerasllm.models.CausalLM, dict(position_embedding="rotary", normalization="rmsnorm",
                                            activation="swiglu", use_bias=False, num_key_value_heads=1,
                                            tie_word_embeddings=False)),
    "masked_lm": (kerasllm.models.MaskedLM, {}),
}


def make_teacher(architecture="gpt2_untied", num_layers=4):
    model_class, extra = ARCHITECTURES[architecture]
    teacher = model_class(num_layers=num_layers, **TINY, **extra)
    # Distinct values everywhere (norms start at exactly 1 and 0, so would match any block).
    rng = np.random.default_rng(0)
    teacher.set_weights([rng.normal(size=w.shape).astype("float32") * 0.3 for w in teacher.get_weights()])
    return teacher


def token_ids(batch=2, length=7):
    return np.random.default_rng(1).integers(0, TINY["vocabulary_size"], size=(batch, length)).astype("int32")


def weights_of(layer):
    return [keras.ops.convert_to_numpy(w.value) for w in layer.weights]


def assert_same_weights(student_layer, teacher_layer):
    student_weights, teacher_weights = weights_of(student_layer), weights_of(teacher_layer)
    assert len(student_weights) == len(teacher_weights) > 0
    for a, b in zip(student_weights, teacher_weights):
        np.testing.assert_array_equal(a, b)


def assert_copied(student, teacher, indices):
    assert student.num_layers == len(student.backbone.blocks) == len(indices)
    for i, index in enumerate(indices):
        assert_same_weights(student.backbone.blocks[i], teacher.backbone.blocks[index])
    assert_same_weights(student.backbone.token_embedding, teacher.backbone.token_embedding)
    assert_same_weights(student.backbone.final_norm, teacher.backbone.final_norm)
    if teacher.backbone.position_embedding is not None:
        assert_same_weights(student.backbone.position_embedding, teacher.backbone.position_embedding)
    if teacher.lm_head is not None:
        assert_same_weights(student.lm_head, teacher.lm_head)


def by_hand(teacher, ids, indices):
    """The teacher's own layers, run in sequence with only the chosen blocks."""
    backbone = teacher.backbone
    x = backbone.token_embedding(ids)
    if backbone.position_embedding is not None:
        x = x + backbone.position_embedding(x)
    for index in indices:
        x = backbone.blocks[index](x)
    return keras.ops.convert_to_numpy(teacher.logits(backbone.final_norm(x)))


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_default_indices_copy_every_other_block(architecture):
    teacher = make_teacher(architecture)
    student = student_from_teacher(teacher, 2)
    assert type(student) is type(teacher)
    assert student.built and student.count_params() < teacher.count_params()
    assert_copied(student, teacher, [0, 2])
    with pytest.raises(AssertionError):  # the check can tell blocks apart
        assert_same_weights(student.backbone.blocks[1], teacher.backbone.blocks[1])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(student(token_ids())), by_hand(teacher, token_ids(), [0, 2]), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_custom_indices_match_the_teacher_layers_run_by_hand(architecture):
    teacher = make_teacher(architecture)
    student = student_from_teacher(teacher, 2, layer_indices=[1, 3])
    assert_copied(student, teacher, [1, 3])
    ids = token_ids()
    expected = by_hand(teacher, ids, [1, 3])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(student(ids)), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(by_hand(teacher, ids, [0, 2]), expected, atol=1e-3)


def test_default_stride_takes_every_kth_block_from_zero():
    teacher = make_teacher(num_layers=6)
    assert_copied(student_from_teacher(teacher, 3), teacher, [0, 2, 4])
    assert_copied(student_from_teacher(teacher, 4), teacher, [0, 1, 2, 3])  # 6 // 4 = 1
    assert_copied(student_from_teacher(teacher, 1), teacher, [0])


def test_student_config_is_the_teachers_with_fewer_layers():
    teacher = make_teacher("llama")
    student = student_from_teacher(teacher, 3, layer_indices=[0, 1, 3])
    teacher_config, student_config = teacher.get_config(), student.get_config()
    for key in ("name", "num_layers", "layer_types"):
        teacher_config.pop(key), student_config.pop(key)
    assert student_config == teacher_config
    assert student.num_layers == 3 and student.name != teacher.name


def test_student_blocks_keep_their_attention_kind():
    # Gemma 3 style: local (sliding window) and global blocks; a copied block keeps its kind and RoPE.
    teacher = kerasllm.models.CausalLM(
        vocabulary_size=64, num_layers=4, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=32,
        position_embedding="rotary", normalization="rmsnorm_plus_one", activation="geglu", use_bias=False,
        sliding_window=4, layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        sliding_rope_max_wavelength=100.0, qk_norm=True, sandwich_norm=True, embedding_scale=4.0,
    )
    student = student_from_teacher(teacher, 2, layer_indices=[1, 2])
    assert student.layer_types == ["full_attention", "sliding_attention"]
    x = np.random.RandomState(0).randint(0, 64, size=(1, 12))
    for i, index in enumerate([1, 2]):
        s_attention, t_attention = student.backbone.blocks[i].attention, teacher.backbone.blocks[index].attention
        assert s_attention.sliding_window == t_attention.sliding_window
        assert s_attention.rope_max_wavelength == t_attention.rope_max_wavelength
    assert_copied(student, teacher, [1, 2])
    assert np.isfinite(keras.ops.convert_to_numpy(student(x))).all()


def test_student_and_teacher_are_independent():
    teacher = make_teacher()
    before = [w.copy() for w in teacher.get_weights()]
    student = student_from_teacher(teacher, 2)
    for weight in student.weights:
        weight.assign(keras.ops.zeros(weight.shape, weight.dtype))
    for a, b in zip(teacher.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    for weight in teacher.weights:
        weight.assign(keras.ops.ones(weight.shape, weight.dtype))
    assert all(not w.any() for w in student.get_weights())


def test_training_the_student_leaves_the_teacher_unchanged():
    teacher = make_teacher()
    before = [w.copy() for w in teacher.get_weights()]
    student = student_from_teacher(teacher, 2)
    student.compile(optimizer=keras.optimizers.SGD(0.5), loss=kerasllm.losses.CausalLMLoss())
    ids = token_ids(batch=4, length=8)
    student.fit(ids, np.roll(ids, -1, axis=1), epochs=1, batch_size=4, verbose=0)
    changed = [not np.array_equal(a, b) for a, b in zip(weights_of(student.backbone.blocks[1]),
                                                          weights_of(teacher.backbone.blocks[2]))]
    assert any(changed)
    for a, b in zip(teacher.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_dtype_overrides_the_policy_and_keeps_the_values():
    teacher = make_teacher()
    student = student_from_teacher(teacher, 2, dtype="mixed_bfloat16")
    assert student.dtype_policy.name == "mixed_bfloat16" and student.compute_dtype == "bfloat16"
    assert teacher.dtype_policy.name == "float32"
    assert_copied(student, teacher, [0, 2])  # variables stay float32 under a mixed policy
    assert student_from_teacher(teacher, 2).dtype_policy.name == "float32"


@pytest.mark.parametrize("architecture", ["gpt2_untied", "masked_lm"])
def test_save_and_load_round_trip(tmp_path, architecture):
    teacher = make_teacher(architecture)
    student = student_from_teacher(teacher, 2, layer_indices=[1, 2])
    path = str(tmp_path / "student.keras")
    student.save(path)
    loaded = kerasllm.utils.load_model(path)
    assert type(loaded) is type(teacher) and loaded.num_layers == 2
    for a, b in zip(loaded.get_weights(), student.get_weights()):
        np.testing.assert_array_equal(a, b)
    ids = token_ids()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(ids)), by_hand(teacher, ids, [1, 2]),
                               rtol=1e-5, atol=1e-5)


class _NotKerasllm(keras.Model):
    def call(self, x):
        return x


@pytest.mark.parametrize(
    "make, num_layers, layer_indices, message",
    [
        (lambda: _NotKerasllm(), 1, None, "build the student yourself"),
        (lambda: keras.Sequential([keras.layers.Dense(4)]), 1, None,
         "kerasllm.models.CausalLM or kerasllm.models.MaskedLM"),
        (make_teacher, 0, None, "from 1 to 3"),
        (make_teacher, 4, None, "keras.models.clone_model"),
        (make_teacher, 5, None, "from 1 to 3"),
        (make_teacher, 2.0, None, "must be an integer"),
        (make_teacher, True, None, "must be an integer"),
        (make_teacher, 2, [0], "one teacher block per student block"),
        (make_teacher, 2, [0, 1, 2], "one teacher block per student block"),
        (make_teacher, 2, [0, 4], r"must lie in \[0, 3\]"),
        (make_teacher, 2, [-1, 2], r"must lie in \[0, 3\]"),
        (make_teacher, 2, [1, 1], "strictly increasing, without repeats"),
        (make_teacher, 2, [3, 1], "strictly increasing"),
        (make_teacher, 2, [0, 1.5], "list of integers"),
        (make_teacher, 2, "02", "list of integers"),
    ],
)
def test_bad_inputs_name_the_fix(make, num_layers, layer_indices, message):
    with pytest.raises(ValueError, match=message):
        student_from_teacher(make(), num_layers, layer_indices=layer_indices)


def test_an_unbuilt_teacher_is_refused():
    teacher = make_teacher()
    teacher.built = False
    with pytest.raises(ValueError, match="not built"):
        student_from_teacher(teacher, 2)
