import json

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.callbacks import QuantizationAwareTraining
from kerasllm.quantization import MinMaxObserver
from kerasllm.quantization import MovingAverageMinMaxObserver
from kerasllm.quantization.quantize import select_layers

EPS = np.float32(1e-7)


# --- numpy references --------------------------------------------------------------------------------


def np_update(kind, momentum, old, batch):
    """PyTorch's MinMaxObserver / MovingAverageMinMaxObserver (averaging_constant = 1 - momentum)."""
    low, high = np.float32(batch.min()), np.float32(batch.max())
    if old is None:
        return low, high
    if kind == "minmax":
        return min(old[0], low), max(old[1], high)
    m, c = np.float32(momentum), np.float32(1.0 - momentum)
    return m * old[0] + c * low, m * old[1] + c * high


def np_fake_static(x, low, high, symmetric=True):
    x = x.astype("float32")
    if symmetric:
        scale = np.float32(127) / (max(abs(low), abs(high)) + EPS)
        return np.clip(np.round(x * scale), -127, 127) / scale
    low, high = min(np.float32(low), np.float32(0)), max(np.float32(high), np.float32(0))
    step = (high - low + EPS) / np.float32(255)
    zero = np.clip(np.round(-low / step) - 128, -128, 127)
    return (np.clip(np.round(x / step) + zero, -128, 127) - zero) * step


def np_fake_int8_kernel(w):
    scale = 127 / (np.abs(w).max(axis=0, keepdims=True) + EPS)
    return np.clip(np.round(w * scale), -127, 127) / scale


def two_layers(first=4):
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(first, name="first"), keras.layers.Dense(3, name="second")]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def scaled_batches(scales, rng, n=4):
    """Batches of `n` rows whose magnitude grows with `scales`, so every observer update moves the range."""
    x = np.concatenate([s * rng.normal(size=(n, 6)) + s for s in scales]).astype("float32")
    return x, rng.normal(size=(len(x), 3)).astype("float32")


class Recorder(keras.callbacks.Callback):
    """Records the observed ranges and the first kernel after every step."""

    def __init__(self, qat):
        super().__init__()
        self.qat, self.ranges, self.kernels = qat, [], []

    def on_train_batch_end(self, batch, logs=None):
        model = self.model  # syncs the JAX training state
        self.ranges.append(dict(self.qat.activation_ranges()))
        self.kernels.append(ops.convert_to_numpy(model.get_layer("first").kernel).copy())


# --- the observers themselves ------------------------------------------------------------------------


@pytest.mark.parametrize("kind,momentum", [("minmax", None), ("moving_average_minmax", 0.75)])
def test_observer_layer_matches_numpy_and_freezes(kind, momentum):
    rng = np.random.default_rng(0)
    observer = MinMaxObserver() if kind == "minmax" else MovingAverageMinMaxObserver(momentum=momentum)
    assert not observer.observed and observer.range() == (float("inf"), float("-inf"))
    expected = None
    for scale in (1.0, 3.0, 0.5, 2.0):
        batch = (scale * rng.normal(size=(3, 5)) + scale).astype("float32")
        low, high = observer(batch, training=True)
        expected = np_update(kind, momentum, expected, batch)
        np.testing.assert_allclose(observer.range(), expected, rtol=1e-6)
        np.testing.assert_allclose([float(low), float(high)], expected, rtol=1e-6)
    # Not training: the range is returned, not updated.
    observer(100 * np.ones((2, 2), "float32"), training=False)
    np.testing.assert_allclose(observer.range(), expected, rtol=1e-6)
    observer.freeze()
    assert observer.frozen
    low, high = observer(-50 * np.ones((2, 2), "float32"), training=True)
    np.testing.assert_allclose([float(low), float(high)], expected, rtol=1e-6)
    np.testing.assert_allclose(observer.range(), expected, rtol=1e-6)
    observer.unfreeze()
    observer(-50 * np.ones((2, 2), "float32"), training=True)
    assert observer.range()[0] < expected[0]


def test_observer_config_and_weights_round_trip():
    observer = MovingAverageMinMaxObserver(momentum=0.9, name="obs")
    observer(np.array([-2.0, 5.0], "float32"), training=True)
    observer.freeze()
    restored = keras.layers.deserialize(keras.layers.serialize(observer))
    assert isinstance(restored, MovingAverageMinMaxObserver) and restored.momentum == 0.9
    assert restored.get_config() == observer.get_config()
    restored.set_weights(observer.get_weights())
    assert restored.range() == (-2.0, 5.0) and restored.frozen
    plain = keras.layers.deserialize(keras.layers.serialize(MinMaxObserver(name="plain")))
    assert type(plain) is MinMaxObserver


@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quantize_int8_static_matches_numpy_and_passes_unobserved(symmetric):
    rng = np.random.default_rng(1)
    x = (3 * rng.normal(size=(2, 5, 8))).astype("float32")
    low, high = np.float32(-1.5), np.float32(2.25)  # narrower than x: clipping is exercised
    out = ops.convert_to_numpy(kerasllm.quantization.fake_quantize_int8_static(x, low, high, symmetric=symmetric))
    reference = np_fake_static(x, low, high, symmetric=symmetric)
    np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-6)
    assert np.abs(out - x).max() > 0.5  # clipped outside the range
    levels = np.unique(np.round(out / (reference.max() - reference.min()) * 1e4))
    assert len(levels) <= 256
    # An observer that has seen nothing: (inf, -inf) leaves the inputs alone.
    same = kerasllm.quantization.fake_quantize_int8_static(x, float("inf"), float("-inf"), symmetric=symmetric)
    np.testing.assert_array_equal(ops.convert_to_numpy(same), x)
    parameters = kerasllm.quantization.fake_quant.int8_static_parameters(low, high, symmetric=symmetric)
    grid = (np.clip(np.round(x / parameters["scale"]) + parameters["zero_point"], parameters["quant_min"],
                    parameters["quant_max"]) - parameters["zero_point"]) * parameters["scale"]
    np.testing.assert_allclose(grid, reference, rtol=1e-5, atol=1e-5)


# --- inside QuantizationAwareTraining ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["minmax", "moving_average_minmax"])
def test_observer_tracks_exactly_the_training_inputs_of_the_layer(kind):
    rng = np.random.default_rng(2)
    x, t = scaled_batches([1.0, 4.0, 0.5], rng)
    model = two_layers()
    qat = QuantizationAwareTraining(
        "int8", layers=["first"], activation_quantization="static", observer=kind, observer_momentum=0.8,
        convert_on_train_end=False,
    )
    # Validation data far outside the training range: evaluation must not move the observer.
    val = (100 * np.ones((4, 6), "float32"), np.zeros((4, 3), "float32"))
    model.fit(x, t, batch_size=4, epochs=1, shuffle=False, callbacks=[qat], validation_data=val, verbose=0)
    expected = None
    for i in range(3):
        expected = np_update(kind, 0.8, expected, x[4 * i: 4 * i + 4])
    ranges = qat.activation_ranges()
    assert list(ranges) == [model.get_layer("first").path]
    np.testing.assert_allclose(ranges[model.get_layer("first").path], expected, rtol=1e-6)
    assert [v.path for v in model.non_trainable_variables] == [
        f"{model.name}/first/input_observer/{name}" for name in ("min_value", "max_value", "frozen")
    ]


def test_observers_stop_updating_after_freezing_while_weights_change():
    rng = np.random.default_rng(3)
    x, t = scaled_batches([1.0, 2.0, 4.0, 8.0, 16.0], rng)
    model = two_layers()
    qat = QuantizationAwareTraining(
        "int8", layers=["first"], activation_quantization="static", observer="moving_average_minmax",
        observer_momentum=0.5, freeze_observers_step=2, convert_on_train_end=False,
    )
    recorder = Recorder(qat)
    model.fit(x, t, batch_size=4, epochs=1, shuffle=False, callbacks=[qat, recorder], verbose=0)
    path = model.get_layer("first").path
    expected = np_update("moving_average_minmax", 0.5, np_update("moving_average_minmax", 0.5, None, x[:4]), x[4:8])
    np.testing.assert_allclose(recorder.ranges[1][path], expected, rtol=1e-6)
    for ranges in recorder.ranges[2:]:
        assert ranges[path] == recorder.ranges[1][path]  # bit-identical after freezing
    for before, after in zip(recorder.kernels[1:], recorder.kernels[2:]):
        assert np.abs(after - before).max() > 1e-4  # while the weights keep training
    # Unfrozen, the growing batches would have moved the range.
    moved = np_update("moving_average_minmax", 0.5, expected, x[8:12])
    assert abs(moved[1] - expected[1]) > 1.0
    assert qat.observers_frozen and qat.get_state()["observers_frozen"]
    assert model.get_layer("first").input_observer.frozen
    # The observer is a sublayer Keras cannot quantize: the plain `convert` refuses and changes nothing;
    # the callback's `convert` removes the observers first and keeps their ranges.
    with pytest.raises(ValueError, match="input_observer"):
        kerasllm.quantization.convert(model, "int8")
    assert model.get_layer("first").quantization_mode is None
    with pytest.warns(UserWarning, match="per token"):
        qat.convert()
    assert model.get_layer("first").quantization_mode == "int8"
    assert not any("input_observer" in v.path for v in model.variables)
    assert qat.activation_ranges()[path] == recorder.ranges[-1][path]


@pytest.mark.parametrize("symmetric", [True, False])
def test_static_forward_and_straight_through_gradients_match_numpy(symmetric):
    rng = np.random.default_rng(4)
    model = two_layers(first=5)
    w1, b1, w2, b2 = [v.copy() for v in model.get_weights()]
    x = rng.normal(size=(4, 6)).astype("float32")
    t = rng.normal(size=(4, 3)).astype("float32")
    qat = QuantizationAwareTraining(
        "int8", layers=["second"], activation_quantization="static", observer="moving_average_minmax",
        observer_momentum=0.5, activation_symmetric=symmetric, convert_on_train_end=False,
    )
    model.fit(x, t, batch_size=4, epochs=2, shuffle=False, callbacks=[qat], verbose=0)

    observed = None
    for _ in range(2):  # two SGD steps on the same batch, in numpy
        h = x @ w1 + b1
        observed = np_update("moving_average_minmax", 0.5, observed, h)
        hq, w2q = np_fake_static(h, *observed, symmetric=symmetric), np_fake_int8_kernel(w2)
        upstream = 2 * (hq @ w2q + b2 - t) / t.size
        # Straight-through: d hq / d h is the identity, so `pre` trains through the quantizer.
        grad_h = upstream @ w2q.T
        w1, b1 = w1 - 0.1 * x.T @ grad_h, b1 - 0.1 * grad_h.sum(0)
        w2, b2 = w2 - 0.1 * hq.T @ upstream, b2 - 0.1 * upstream.sum(0)
        assert np.abs(hq - h).max() > 1e-4  # the quantizer really acts
    for actual, expected in zip(model.get_weights(), (w1, b1, w2, b2)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(qat.activation_ranges()[model.get_layer("second").path], observed, rtol=1e-5)
    # The inference forward (training=False) quantizes with the stored range and leaves it alone.
    y = ops.convert_to_numpy(model(x))
    h = x @ w1 + b1
    reference = np_fake_static(h, *observed, symmetric=symmetric) @ np_fake_int8_kernel(w2) + b2
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(qat.activation_ranges()[model.get_layer("second").path], observed, rtol=1e-5)


def test_state_round_trips_through_get_state_and_checkpoint(tmp_path):
    rng = np.random.default_rng(5)
    x, t = scaled_batches([1.0, 3.0], rng)
    kwargs = dict(layers=["first"], activation_quantization="static", observer="moving_average_minmax",
                  observer_momentum=0.5, convert_on_train_end=False)

    def ema(batches):
        observed = None
        for batch in batches:
            observed = np_update("moving_average_minmax", 0.5, observed, batch)
        return observed

    # get_state -> JSON -> set_state on a fresh callback and model: the average continues from it.
    qat = QuantizationAwareTraining("int8", **kwargs)
    two_layers().fit(x, t, batch_size=4, epochs=1, shuffle=False, callbacks=[qat], verbose=0)
    state = json.loads(json.dumps(qat.get_state()))
    assert state["step"] == 2 and not state["observers_frozen"]
    resumed = QuantizationAwareTraining("int8", **kwargs)
    resumed.set_state(state)
    model = two_layers()
    model.fit(x[:4], t[:4], batch_size=4, epochs=1, callbacks=[resumed], verbose=0)
    path = model.get_layer("first").path
    assert path != state["activation_ranges"][0][0]  # another model of this process: matched by position
    np.testing.assert_allclose(resumed.activation_ranges()[path], ema([x[:4], x[4:], x[:4]]), rtol=1e-6)

    # A kerasllm Checkpoint resume: 1 epoch, then a fresh run asked for 2 epochs goes on from it.
    qat = QuantizationAwareTraining("int8", **kwargs)
    checkpoint = kerasllm.callbacks.Checkpoint(str(tmp_path), every_n_steps=1, callbacks=[qat])
    two_layers().fit(x, t, batch_size=4, epochs=1, shuffle=False, callbacks=[checkpoint, qat], verbose=0)
    resumed = QuantizationAwareTraining("int8", **kwargs)
    checkpoint = kerasllm.callbacks.Checkpoint(str(tmp_path), every_n_steps=1, callbacks=[resumed])
    model = two_layers()
    model.fit(x, t, batch_size=4, epochs=2, shuffle=False, callbacks=[checkpoint, resumed], verbose=0)
    assert resumed.step == 4
    np.testing.assert_allclose(
        resumed.activation_ranges()[model.get_layer("first").path], ema([x[:4], x[4:], x[:4], x[4:]]), rtol=1e-6
    )

    # A frozen state stays frozen.
    frozen = QuantizationAwareTraining("int8", **kwargs)
    frozen.set_state(dict(state, observers_frozen=True))
    model = two_layers()
    model.fit(10 * x, t, batch_size=4, epochs=1, callbacks=[frozen], verbose=0)
    assert len(state["activation_ranges"]) == 1
    saved = state["activation_ranges"][0][1:]
    np.testing.assert_allclose(frozen.activation_ranges()[model.get_layer("first").path], saved, rtol=0)


def test_static_qat_on_causal_lm_converts_and_exports_ranges(tmp_path):
    model = kerasllm.models.CausalLM(
        vocabulary_size=61, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=kerasllm.losses.CausalLMLoss())
    x = np.random.default_rng(6).integers(0, 61, (4, 16)).astype("int32")
    qat = QuantizationAwareTraining("int8", activation_quantization="static", freeze_observers_step=1)
    with pytest.warns(UserWarning, match="quantize their inputs per token"):
        model.fit(x, np.roll(x, -1, axis=1), batch_size=2, epochs=1, callbacks=[qat], verbose=0)
    layers = select_layers(model)
    ranges = qat.activation_ranges()
    assert sorted(ranges) == sorted(layer.path for layer in layers)
    assert all(np.isfinite(low) and np.isfinite(high) and low < high for low, high in ranges.values())
    for layer in layers:  # converted to Keras int8, with the observers gone from the model
        assert layer.quantization_mode == "int8" and getattr(layer, "input_observer", None) is None
    assert not any("input_observer" in v.path for v in model.variables)
    path = tmp_path / "ranges.json"
    qat.save_activation_ranges(str(path))
    document = json.loads(path.read_text())
    assert document["frozen"] and document["symmetric"]
    for name, (low, high) in ranges.items():
        entry = document["layers"][name]
        assert (entry["min"], entry["max"]) == (low, high) and entry["zero_point"] == 0
        np.testing.assert_allclose(entry["scale"], (max(-low, high) + 1e-7) / 127, rtol=1e-9)
    assert qat.get_state()["activation_ranges"] == [[name, *value] for name, value in ranges.items()]
    restored = QuantizationAwareTraining.from_config(qat.get_config())
    assert restored.get_config() == qat.get_config() and restored.activation_quantization == "static"


def test_bad_input():
    with pytest.raises(ValueError, match="Unknown observer 'histogram'.*moving_average_minmax"):
        QuantizationAwareTraining(activation_quantization="static", observer="histogram")
    with pytest.raises(ValueError, match="freeze_observers_step.*non-negative integer"):
        QuantizationAwareTraining(activation_quantization="static", freeze_observers_step=-1)
    with pytest.raises(ValueError, match="static' needs mode='int8'.*activation_quantization='dynamic'"):
        QuantizationAwareTraining("int4", activation_quantization="static")
    with pytest.raises(ValueError, match="Unknown activation_quantization 'fixed'"):
        QuantizationAwareTraining(activation_quantization="fixed")
    with pytest.raises(ValueError, match="freeze_observers_step=2 is not after start_step=2"):
        QuantizationAwareTraining(activation_quantization="static", start_step=2, freeze_observers_step=2)
    with pytest.raises(ValueError, match="pass activation_quantization='static'"):
        QuantizationAwareTraining(freeze_observers_step=3)
    with pytest.raises(ValueError, match="observer_momentum"):
        QuantizationAwareTraining(activation_quantization="static", observer_momentum=1.0)
    with pytest.raises(ValueError, match="momentum.*0.99"):
        MovingAverageMinMaxObserver(momentum=1.5)
    with pytest.raises(ValueError, match="needs activation_quantization='static'"):
        QuantizationAwareTraining().save_activation_ranges("unused.json")
    # No quantizable layer: a clear error, and nothing attached.
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="No quantizable Dense layers"):
        plain.fit(np.ones((2, 4)), np.ones((2, 2)), verbose=0,
                  callbacks=[QuantizationAwareTraining(activation_quantization="static")])
    assert not plain.non_trainable_variables
