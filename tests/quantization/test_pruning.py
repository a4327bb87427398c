"""Pruning numerics (masks, schedule) against numpy references, mask attach/strip, and bad input."""

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.utils import dense_transforms
from kerasllm.quantization import pruning


def _tiny(**kwargs):
    config = dict(vocabulary_size=61, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
                  max_sequence_length=16)
    config.update(kwargs)
    model = kerasllm.models.CausalLM(**config)
    model(np.zeros((1, 4), dtype="int32"))
    return model


def _reference_magnitude_mask(kernel, sparsity):
    flat = np.abs(kernel).reshape(-1)
    count = int(round(sparsity * flat.size))
    # Sort by (magnitude, flat index): the lower index goes first among equal magnitudes.
    order = sorted(range(flat.size), key=lambda i: (flat[i], i))
    mask = np.ones(flat.size, dtype="float32")
    mask[order[:count]] = 0
    return mask.reshape(kernel.shape)


def _reference_two_four_mask(kernel):
    mask = np.zeros_like(kernel, dtype="float32")
    for column in range(kernel.shape[1]):
        for start in range(0, kernel.shape[0], 4):
            group = [(-abs(kernel[start + i, column]), i) for i in range(4)]
            for _, i in sorted(group)[:2]:
                mask[start + i, column] = 1
    return mask


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.75, 0.9])
def test_magnitude_mask_matches_numpy_reference_with_ties(sparsity):
    rng = np.random.default_rng(0)
    kernel = np.round(rng.normal(size=(12, 10)), 1).astype("float32")  # rounding makes many ties
    mask = pruning.magnitude_mask(kernel, sparsity)
    np.testing.assert_array_equal(mask, _reference_magnitude_mask(kernel, sparsity))
    assert (mask == 0).sum() == round(sparsity * kernel.size)
    kept, pruned = np.abs(kernel)[mask == 1], np.abs(kernel)[mask == 0]
    if pruned.size and kept.size:
        assert pruned.max() <= kept.min()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_four_mask_matches_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    kernel = np.round(rng.normal(size=(16, 6)), 1 if seed == 2 else 3).astype("float32")
    mask = pruning.two_four_mask(kernel)
    np.testing.assert_array_equal(mask, _reference_two_four_mask(kernel))
    np.testing.assert_array_equal(mask.reshape(4, 4, 6).sum(axis=1), 2)


def test_polynomial_schedule_matches_formula():
    initial, target, begin, end = 0.1, 0.8, 10, 50
    for step in [0, 9, 10, 11, 20, 33, 49, 50, 51, 1000]:
        t = np.clip(step, begin, end)
        expected = target + (initial - target) * (1 - (t - begin) / (end - begin)) ** 3
        assert pruning.polynomial_sparsity(step, initial, target, begin, end) == pytest.approx(expected, abs=1e-12)
    assert pruning.polynomial_sparsity(50, 0.0, 0.5, 50, 50) == 0.5


def test_callback_update_steps_and_sparsities_follow_the_schedule():
    callback = kerasllm.callbacks.Pruning(0.6, begin_step=2, end_step=11, frequency=4, initial_sparsity=0.2)
    callback._end_step = 11
    updates = [s for s in range(20) if callback.is_update_step(s)]
    assert updates == [2, 6, 10, 11]
    assert callback.sparsity_at(0) == 0.0
    assert callback.sparsity_at(2) == pytest.approx(0.2)
    assert callback.sparsity_at(11) == pytest.approx(0.6)
    assert callback.sparsity_at(6) == pytest.approx(0.6 + (0.2 - 0.6) * (1 - 4 / 9) ** 3)
    constant = kerasllm.callbacks.Pruning(0.6, schedule="constant", begin_step=3, end_step=11)
    constant._end_step = 11
    assert constant.sparsity_at(2) == 0.0 and constant.sparsity_at(3) == 0.6


def test_mask_is_applied_in_the_forward_pass_and_strip_writes_exact_zeros():
    model = _tiny()
    x = np.random.default_rng(0).integers(0, 61, size=(2, 8))
    plain_variables = len(model.variables)
    reference = _tiny()  # the same weights, no masks: its kernels will hold kernel * mask
    reference.set_weights(model.get_weights())
    layers = pruning.prunable_layers(model)
    assert len(layers) == 6  # query, key, value, output; intermediate, output
    masks = {}
    for layer in layers:
        holder = pruning.attach_mask(layer)
        assert holder.mask.path == layer.path + "/pruning_mask/mask"
        mask = pruning.magnitude_mask(ops.convert_to_numpy(layer.kernel), 0.5)
        holder.mask.assign(mask)
        masks[layer.path[len(model.name):]] = mask
    assert len(model.non_trainable_variables) == 6
    masked_logits = ops.convert_to_numpy(model(x))

    for layer in pruning.prunable_layers(reference):
        layer.kernel.assign(ops.convert_to_numpy(layer.kernel) * masks[layer.path[len(reference.name):]])
    np.testing.assert_allclose(masked_logits, ops.convert_to_numpy(reference(x)), atol=1e-6)
    assert np.abs(masked_logits - ops.convert_to_numpy(_unmasked_logits(model, x))).max() > 1e-4

    kerasllm.quantization.strip_pruning(model)
    assert len(model.variables) == plain_variables and not model.non_trainable_variables
    for layer in pruning.prunable_layers(model):
        assert not dense_transforms.has_transform(layer, "pruning")
        assert pruning.get_mask_holder(layer) is None
        kernel = ops.convert_to_numpy(layer.kernel)
        np.testing.assert_array_equal(kernel[masks[layer.path[len(model.name):]] == 0], 0)
    np.testing.assert_allclose(ops.convert_to_numpy(model(x)), masked_logits, atol=1e-6)


def _unmasked_logits(model, x):
    saved = {}
    for layer in pruning.prunable_layers(model):
        holder = pruning.get_mask_holder(layer)
        saved[layer.path] = ops.convert_to_numpy(holder.mask)
        holder.mask.assign(np.ones_like(saved[layer.path]))
    logits = model(x)
    for layer in pruning.prunable_layers(model):
        pruning.get_mask_holder(layer).mask.assign(saved[layer.path])
    return logits


def test_layers_argument_selects_by_path():
    model = _tiny()
    selected = pruning.prunable_layers(model, layers="feedforward/intermediate")
    assert [layer.path[len(model.name):] for layer in selected] == ["/backbone/block_0/feedforward/intermediate"]
    assert len(pruning.prunable_layers(model, layers=["attention/(query|key)", "output"])) == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_sparsity": 1.0}, r"target_sparsity.*\[0, 1\)"),
        ({"target_sparsity": -0.1}, r"target_sparsity.*\[0, 1\)"),
        ({"target_sparsity": 0.5, "initial_sparsity": 1.5}, r"initial_sparsity.*\[0, 1\)"),
        ({"target_sparsity": 0.5, "structure": "4:8"}, "Unknown structure"),
        ({"target_sparsity": 0.5, "schedule": "cubic"}, "Unknown schedule"),
        ({"target_sparsity": 0.3, "structure": "2:4"}, "target_sparsity=0.5"),
        ({"target_sparsity": 0.5, "begin_step": 10, "end_step": 5}, "begin_step=10 is after end_step=5"),
        ({"target_sparsity": 0.5, "frequency": 0}, "frequency"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kerasllm.callbacks.Pruning(**kwargs)


def test_two_four_on_a_width_not_divisible_by_four_names_the_layer():
    model = _tiny(hidden_dim=18, num_heads=2, intermediate_dim=36)
    callback = kerasllm.callbacks.Pruning(0.5, structure="2:4")
    with pytest.raises(ValueError, match=r"block_0/attention/\w+'.*18 inputs"):
        callback.set_model(model)
    assert all(pruning.get_mask_holder(layer) is None for layer in pruning.prunable_layers(model))


@pytest.mark.filterwarnings("ignore:Layer .* does not have a `quantize` method")
def test_no_prunable_layers_and_quantized_layers_are_refused():
    plain = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="no Dense layers.*layers="):
        kerasllm.callbacks.Pruning(0.5).set_model(plain)
    with pytest.raises(ValueError, match="no Dense layers matching"):
        kerasllm.callbacks.Pruning(0.5, layers="nothing_here").set_model(_tiny())
    model = _tiny()
    model.quantize("int8")
    with pytest.raises(ValueError, match="already quantized"):
        kerasllm.callbacks.Pruning(0.5).set_model(model)


def test_end_step_is_required_when_the_length_is_unknown():
    callback = kerasllm.callbacks.Pruning(0.5)
    callback.set_model(_tiny())
    callback.set_params({"epochs": 1, "steps": None})  # what `fit` passes for a generator without length
    with pytest.raises(ValueError, match="end_step="):
        callback.on_train_begin()
