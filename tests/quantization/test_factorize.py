"""Low-rank factorization: SVD numerics vs numpy, exact full rank, smaller model that trains and reloads."""

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.quantization.factorize import apply_low_rank, energy_rank, low_rank_config

# One xdist worker runs this file, so its module fixtures are built once (tests/run.sh).
pytestmark = pytest.mark.xdist_group("test_factorize")

CONFIG = dict(vocabulary_size=61, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
              max_sequence_length=16)


@pytest.fixture(scope="module")
def model():
    """One structured model for the whole file (`factorize` does not modify its input)."""
    return _model()


def _model():
    model = kerasllm.models.CausalLM(**CONFIG)
    # Random normal(0.02) kernels have flat spectra; give them some structure (and nonzero biases).
    rng = np.random.default_rng(0)
    for variable in model.weights:
        if variable.path.endswith("kernel"):
            rows, cols = variable.shape
            low = rng.normal(size=(rows, 3)) @ rng.normal(size=(3, cols))
            variable.assign((0.05 * low + 0.01 * rng.normal(size=(rows, cols))).astype("float32"))
        elif variable.path.endswith("bias"):
            variable.assign(rng.normal(scale=0.1, size=variable.shape).astype("float32"))
    return model


def _ids():
    return np.random.default_rng(1).integers(0, 61, size=(2, 8))


def test_full_rank_factorization_reproduces_the_logits(model):
    full, report = kerasllm.quantization.factorize(model, energy=1.0, only_if_smaller=False)
    assert set(report["ranks"].values()) == {16}  # min(in, out) for every projection
    np.testing.assert_allclose(ops.convert_to_numpy(full(_ids())), ops.convert_to_numpy(model(_ids())), atol=1e-4)


def test_truncated_factors_match_a_numpy_svd_and_the_model_shrinks(model):
    before = {layer.path[len(model.name):]: (ops.convert_to_numpy(layer.kernel), ops.convert_to_numpy(layer.bias))
              for layer in kerasllm.quantization.pruning.prunable_layers(model)}
    small, report = kerasllm.quantization.factorize(model, rank=3)
    assert report["ranks"] == {path[1:]: 3 for path in before}
    assert report["parameters_after"] == small.count_params() < report["parameters_before"] == model.count_params()
    # Projections: 4 of 16x16 (+bias 16) and 16x32 (+32), 32x16 (+16); rank 3 saves the difference.
    saved = 4 * (256 - 3 * 32) + 2 * (512 - 3 * 48)
    assert report["parameters_before"] - report["parameters_after"] == saved
    for layer in small._flatten_layers():
        if isinstance(layer, kerasllm.layers.LowRankDense):
            kernel, bias = before[layer.path[len(small.name):]]
            u, s, vt = np.linalg.svd(kernel.astype("float64"), full_matrices=False)
            reference = (u[:, :3] * s[:3]) @ vt[:3]
            product = ops.convert_to_numpy(layer.down.kernel) @ ops.convert_to_numpy(layer.up.kernel)
            np.testing.assert_allclose(product, reference, atol=1e-5)
            np.testing.assert_allclose(ops.convert_to_numpy(layer.up.bias), bias)
            assert layer.down.bias is None
    # The input model is untouched.
    for layer in kerasllm.quantization.pruning.prunable_layers(model):
        assert isinstance(layer, keras.layers.Dense)
        np.testing.assert_array_equal(ops.convert_to_numpy(layer.kernel), before[layer.path[len(model.name):]][0])


def test_energy_picks_the_smallest_rank_and_skips_layers_without_saving(model):
    s = np.array([4.0, 2.0, 1.0, 1.0])  # squared: 16, 4, 1, 1 of 22
    assert [energy_rank(s, e) for e in (0.5, 16 / 22, 0.8, 0.95, 1.0)] == [1, 1, 2, 3, 4]
    small, report = kerasllm.quantization.factorize(model, energy=0.9)
    for path, rank in report["ranks"].items():
        layer = next(l for l in small._flatten_layers() if l.path == f"{small.name}/{path}")
        kernel = ops.convert_to_numpy(next(l for l in model._flatten_layers()
                                           if l.path == f"{model.name}/{path}").kernel)
        singular = np.linalg.svd(kernel.astype("float64"), compute_uv=False)
        assert rank == energy_rank(singular, 0.9) and layer.rank == rank
    full, report = kerasllm.quantization.factorize(model, rank=16)
    assert report["ranks"] == {} and len(report["skipped"]) == 6
    assert "no saving" in report["skipped"]["backbone/block_0/attention/query"]


def test_factorized_model_fine_tunes_saves_as_keras_and_reloads_in_a_fresh_process(
    model, tmp_path, run_in_fresh_process
):
    small, report = kerasllm.quantization.factorize(model, rank=4, layers="feedforward")
    assert sorted(report["ranks"]) == ["backbone/block_0/feedforward/intermediate",
                                       "backbone/block_0/feedforward/output"]
    assert low_rank_config(small) == report["ranks"]
    small.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=kerasllm.losses.CausalLMLoss())
    ids = np.random.default_rng(2).integers(0, 61, size=(8, 9))
    history = small.fit(ids[:, :-1], ids[:, 1:], batch_size=4, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = str(tmp_path / "small.keras")
    small.save(path)
    np.save(tmp_path / "x.npy", _ids())
    expected = ops.convert_to_numpy(small(_ids()))
    # A .keras file reloads as the factorized model (its `low_rank` config entry) in a fresh process.
    run_in_fresh_process(
        "import numpy as np, keras, kerasllm\n"
        f"model = keras.saving.load_model({path!r})\n"
        "from kerasllm.quantization.factorize import low_rank_config\n"
        f"assert low_rank_config(model) == {report['ranks']!r}, low_rank_config(model)\n"
        f"assert model.count_params() == {small.count_params()}\n"
        f"np.save({str(tmp_path / 'logits.npy')!r}, "
        f"keras.ops.convert_to_numpy(model(np.load({str(tmp_path / 'x.npy')!r}))))\n"
    )
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), expected)


def _int8_dense_reference(x, kernel, bias):
    """Keras 3.15's int8 Dense in numpy: abs-max int8 kernel per output channel, input per token, rescaled."""
    kernel_scale = 127.0 / (np.abs(kernel).max(axis=0) + 1e-7)
    input_scale = 127.0 / (np.abs(x).max(axis=-1, keepdims=True) + 1e-7)
    kernel_q = np.clip(np.round(kernel * kernel_scale), -127, 127)
    x_q = np.clip(np.round(x * input_scale), -127, 127)
    out = (x_q @ kernel_q) / (input_scale * kernel_scale)
    return out if bias is None else out + bias


def test_factorized_model_quantizes_to_int8_factors_and_reloads_in_a_fresh_process(
    model, tmp_path, run_in_fresh_process
):
    small, _ = kerasllm.quantization.factorize(model, rank=4, layers="feedforward")
    low_rank = small.backbone.blocks[0].feedforward.intermediate
    assert isinstance(low_rank, kerasllm.layers.LowRankDense)
    floats = {name: (ops.convert_to_numpy(sub.kernel), None if sub.bias is None else ops.convert_to_numpy(sub.bias))
              for name, sub in (("down", low_rank.down), ("up", low_rank.up))}
    layers = kerasllm.quantization.quantize(small, "int8")
    # Both factors of both low-rank projections, and the 4 attention projections.
    assert len(layers) == 4 + 2 * 2 and low_rank.down in layers and low_rank.up in layers
    for sub in (low_rank.down, low_rank.up):
        assert keras.backend.standardize_dtype(sub._kernel.dtype) == "int8"
    x = np.random.default_rng(3).normal(size=(5, 16)).astype("float32")
    hidden = _int8_dense_reference(x, *floats["down"])
    expected = _int8_dense_reference(hidden, *floats["up"])
    np.testing.assert_allclose(ops.convert_to_numpy(low_rank(x)), expected, rtol=0,
                               atol=1e-5 * np.abs(expected).max())
    path = str(tmp_path / "small-int8.keras")
    small.save(path)
    np.save(tmp_path / "x.npy", _ids())
    run_in_fresh_process(
        "import numpy as np, keras, kerasllm\n"
        f"model = kerasllm.utils.load_model({path!r})\n"
        "sub = model.backbone.blocks[0].feedforward.intermediate.up\n"
        "assert sub.quantization_mode == 'int8', sub.quantization_mode\n"
        f"np.save({str(tmp_path / 'logits.npy')!r}, "
        f"keras.ops.convert_to_numpy(model(np.load({str(tmp_path / 'x.npy')!r}))))\n"
    )
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), ops.convert_to_numpy(small(_ids())))


def test_low_rank_dense_config_round_trip():
    layer = kerasllm.layers.LowRankDense(units=8, rank=2, use_bias=False, name="proj")
    layer.build((None, 6))
    clone = kerasllm.layers.LowRankDense.from_config(layer.get_config())
    assert (clone.units, clone.rank, clone.use_bias, clone.name) == (8, 2, False, "proj")
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    expected = x @ ops.convert_to_numpy(layer.down.kernel) @ ops.convert_to_numpy(layer.up.kernel)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), expected, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 0}, "rank.*positive integer"),
        ({"rank": -2}, "rank.*positive integer"),
        ({"rank": 17}, r"rank=17 is larger than layer '.*attention/\w+' allows.*at most 16"),
        ({"energy": 0.0}, r"energy.*\(0, 1\]"),
        ({"energy": 1.5}, r"energy.*\(0, 1\]"),
        ({"layers": "no_such_layer"}, "no Dense layers"),
    ],
)
def test_bad_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kerasllm.quantization.factorize(model, **kwargs)


def test_apply_low_rank_names_unknown_paths(model):
    with pytest.raises(ValueError, match="No Dense layer at"):
        apply_low_rank(model, {"backbone/nothing": 2})
