"""Layout-map rules on variable paths and shapes, and their errors; no devices needed."""

import keras
import numpy as np
import pytest

import kerasllm
from kerasllm.distribution import auto_layout_map
from kerasllm.distribution import get_layout_map


def mesh(batch=2, model=4):
    # A mesh is plain data: the layout map never touches the devices, so any names will do.
    devices = np.array([f"cpu:{i}" for i in range(batch * model)]).reshape(batch, model)
    return keras.distribution.DeviceMesh((batch, model), ("batch", "model"), devices)


def tiny(**overrides):
    config = dict(vocabulary_size=64, num_layers=2, num_heads=8, num_key_value_heads=4, hidden_dim=32,
                  intermediate_dim=64, max_sequence_length=16, activation="swiglu", normalization="rmsnorm",
                  position_embedding="rotary", tie_word_embeddings=False)
    config.update(overrides)
    return kerasllm.models.CausalLM(**config)


def axes(layout_map, path):
    layout = layout_map[path]
    return None if layout is None else tuple(layout.axes)


def test_megatron_rules_on_every_weight():
    model = tiny()
    layout_map = model.get_layout_map(mesh())
    by_name = {v.path.split("/", 1)[1]: axes(layout_map, v.path) for v in model.weights}
    assert by_name["backbone/token_embedding/embeddings"] == ("model", None)
    for name in ("query", "key", "value"):
        assert by_name[f"backbone/block_1/attention/{name}/kernel"] == (None, "model")
        assert by_name[f"backbone/block_1/attention/{name}/bias"] == ("model",)
    assert by_name["backbone/block_0/attention/output/kernel"] == ("model", None)
    assert by_name["backbone/block_0/attention/output/bias"] == (None,)
    for name in ("gate", "intermediate"):
        assert by_name[f"backbone/block_0/feedforward/{name}/kernel"] == (None, "model")
        assert by_name[f"backbone/block_0/feedforward/{name}/bias"] == ("model",)
    assert by_name["backbone/block_0/feedforward/output/kernel"] == ("model", None)
    assert by_name["backbone/block_0/attention_norm/scale"] == (None,)
    assert by_name["lm_head/kernel"] == (None, "model")
    # Every weight is covered by exactly one rule (LayoutMap raises on two).
    assert None not in by_name.values()


def test_gpt2_style_masked_lm_and_classifier():
    masked = kerasllm.models.MaskedLM(vocabulary_size=64, num_layers=1, num_heads=4, hidden_dim=16,
                                      intermediate_dim=32, max_sequence_length=16)
    layout_map = masked.get_layout_map(mesh())
    assert all(layout_map[v.path] is not None for v in masked.weights)
    assert axes(layout_map, masked.weights[1].path) == (None, None)  # learned position embedding
    classifier = kerasllm.models.SequenceClassifier.from_backbone(masked, num_classes=3)
    layout_map = get_layout_map(classifier, mesh())
    head = [v for v in classifier.weights if "classification_head" in v.path]
    assert [axes(layout_map, v.path) for v in head] == [(None, None), (None,)]


def test_lora_int8_and_pruning_masks_follow_their_kernel():
    model = tiny(num_layers=1, activation="gelu", normalization="layernorm", position_embedding="learned")
    model.enable_lora(rank=2, target_layers=("query", "output"))
    layout_map = model.get_layout_map(mesh())
    paths = {v.path.split("/", 1)[1]: axes(layout_map, v.path) for v in model.weights}
    assert paths["backbone/block_0/attention/query/lora_kernel_a"] == (None, None)
    assert paths["backbone/block_0/attention/query/lora_kernel_b"] == (None, "model")
    assert paths["backbone/block_0/attention/output/lora_kernel_a"] == ("model", None)
    assert paths["backbone/block_0/feedforward/output/lora_kernel_b"] == (None, None)

    quantized = tiny(num_layers=1, activation="gelu", normalization="layernorm", position_embedding="learned")
    quantized.quantize("int8")
    layout_map = quantized.get_layout_map(mesh())
    paths = {v.path.split("/", 1)[1]: axes(layout_map, v.path) for v in quantized.weights}
    assert paths["backbone/block_0/attention/query/kernel"] == (None, "model")
    assert paths["backbone/block_0/attention/query/kernel_scale"] == ("model",)
    assert paths["backbone/block_0/feedforward/output/kernel_scale"] == (None,)

    prompted = tiny(num_layers=1)
    prompted.enable_prompt_tuning(4)
    prompt = [v for v in prompted.weights if "soft_prompt" in v.path][0]
    assert axes(prompted.get_layout_map(mesh()), prompt.path) == (None, None)

    pruned = tiny(num_layers=1)
    from kerasllm.quantization import pruning

    for layer in pruning.prunable_layers(pruned):
        pruning.attach_mask(layer)
    layout_map = pruned.get_layout_map(mesh())
    masks = {v.path.split("/", 1)[1]: axes(layout_map, v.path) for v in pruned.weights if "pruning_mask" in v.path}
    assert masks["backbone/block_0/attention/key/pruning_mask/mask"] == (None, "model")
    assert masks["backbone/block_0/feedforward/output/pruning_mask/mask"] == ("model", None)


@pytest.mark.parametrize(
    "overrides, message, fitting_model_dim",
    [
        (dict(num_heads=6, num_key_value_heads=6, hidden_dim=24), "query heads, num_heads=6", 2),
        (dict(num_key_value_heads=2), "key/value heads, num_key_value_heads=2", 2),
        (dict(intermediate_dim=66), "intermediate_dim=66", 2),
        (dict(vocabulary_size=61), "vocabulary_size=61", 1),
    ],
)
def test_model_dimension_must_divide_the_architecture(overrides, message, fitting_model_dim):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides).get_layout_map(mesh())
    # The same model lays out on a mesh whose model dimension divides it.
    tiny(**overrides).get_layout_map(mesh(batch=8 // fitting_model_dim, model=fitting_model_dim))


def test_bad_mesh_axis_and_foreign_model():
    with pytest.raises(ValueError, match="not an axis of the device mesh"):
        tiny().get_layout_map(mesh(), model_parallel_dim_name="tensor")
    with pytest.raises(ValueError, match="data_parallel_dim_name='data'"):
        tiny().get_layout_map(mesh(), data_parallel_dim_name="data")
    with pytest.raises(ValueError, match="auto_layout_map"):
        get_layout_map(keras.Sequential([keras.layers.Dense(4)]), mesh())


def test_large_unmatched_weight_is_named():
    model = tiny(num_layers=1)
    layout_map = model.get_layout_map(mesh())
    del layout_map[r".*backbone/block_\d+/feedforward/output/(kernel|pruning_mask/mask)"]
    with pytest.raises(ValueError, match=r"block_0/feedforward/output/kernel"):
        kerasllm.distribution.check_layout_map(model, layout_map, max_replicated_size=1000)
    kerasllm.distribution.check_layout_map(model, layout_map, max_replicated_size=64 * 32)  # small: fine


def test_auto_layout_map_from_shapes():
    inputs = keras.Input((12,))
    hidden = keras.layers.Dense(40, name="wide")(inputs)  # (12, 40): 40 is the largest divisible axis
    outputs = keras.layers.Dense(3, name="narrow")(hidden)  # (40, 3): small, replicated
    model = keras.Model(inputs, outputs)
    layout_map = auto_layout_map(model, mesh(), max_replicated_size=100)
    assert axes(layout_map, "wide/kernel") == (None, "model")
    assert axes(layout_map, "wide/bias") == (None,)
    assert axes(layout_map, "narrow/kernel") == ("model", None)  # 120 > 100 elements, 40 divisible
    assert axes(layout_map, "narrow/bias") == (None,)
    odd = keras.Sequential([keras.Input((7,)), keras.layers.Dense(9, name="odd")])
    kernel = odd.layers[0].kernel.path
    with pytest.raises(ValueError, match=kernel):
        auto_layout_map(odd, mesh(), max_replicated_size=10)
    assert axes(auto_layout_map(odd, mesh(), max_replicated_size=100), kernel) == (None, None)


def test_setup_errors():
    if keras.backend.backend() != "jax":
        with pytest.raises(ValueError, match="supports JAX only"):
            kerasllm.distribution.data_parallel()
        with pytest.raises(ValueError, match="supports JAX only"):
            kerasllm.distribution.model_parallel(tiny(), model_dim=1)
        return
    n = len(keras.distribution.list_devices())
    with pytest.raises(ValueError, match="Unknown device type"):
        kerasllm.distribution.data_parallel(devices="npu")
    with pytest.raises(ValueError, match="Unknown device"):
        kerasllm.distribution.data_parallel(devices=["xpu:0"])
    with pytest.raises(ValueError, match="divides the number of devices"):
        kerasllm.distribution.model_parallel(tiny(), model_dim=n + 1)
    with pytest.raises(ValueError, match="needs a `model`"):
        kerasllm.distribution.model_parallel(model_dim=1)
    assert keras.distribution.distribution() is None


def test_check_batch_size():
    distribution = keras.distribution.DataParallel(device_mesh=mesh(batch=4, model=2).__class__(
        (4,), ("batch",), np.array([f"cpu:{i}" for i in range(4)])))
    kerasllm.distribution.check_batch_size(8, distribution)
    with pytest.raises(ValueError, match="not divisible by the data-parallel dimension of the mesh \\(4\\)"):
        kerasllm.distribution.check_batch_size(10, distribution)
