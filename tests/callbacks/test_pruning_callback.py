"""Pruning callback: exact sparsity on schedule, 2:4 pattern, zeros that stay zero inside the compiled
step, plain save -> fresh-process reload, exact resume through Checkpoint, composition with QAT."""

import os

import keras
import numpy as np
import pytest
from keras import ops

import kerasllm
from kerasllm.utils import dense_transforms
from kerasllm.quantization import pruning

# One xdist worker runs this file, so its module fixtures are built once (tests/run.sh).
pytestmark = pytest.mark.xdist_group("test_pruning_callback")

CONFIG = dict(vocabulary_size=61, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
              max_sequence_length=16)


def _model(seed=0, optimizer=None):
    keras.utils.set_random_seed(seed)
    model = kerasllm.models.CausalLM(**CONFIG)
    model(np.zeros((1, 8), dtype="int32"))
    model.compile(optimizer=optimizer or keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  loss=kerasllm.losses.CausalLMLoss())
    return model


def _data(samples=16, length=8):
    ids = np.random.default_rng(0).integers(0, 61, size=(samples, length + 1))
    return ids[:, :-1], ids[:, 1:]


def _kernels(model):
    return {layer.path[len(model.name):]: ops.convert_to_numpy(layer.kernel)
            for layer in pruning.prunable_layers(model)}


class _Probe(keras.callbacks.Callback):
    """Records, after every step, each pruned layer's mask, raw kernel and effective kernel."""

    def __init__(self, pruning_callback):
        super().__init__()
        self.pruning_callback = pruning_callback
        self.records = []

    def on_train_batch_end(self, batch, logs=None):
        record = {}
        for layer in pruning.prunable_layers(self.model):
            holder = pruning.get_mask_holder(layer)
            record[layer.path[len(self.model.name):]] = (
                ops.convert_to_numpy(holder.mask),
                ops.convert_to_numpy(layer.kernel),
                ops.convert_to_numpy(dense_transforms.transformed_kernel(layer)),
            )
        self.records.append((self.pruning_callback.step, record))


@pytest.fixture(scope="module")
def scheduled_run():
    """One run of 8 steps: polynomial schedule 25% -> 75% from step 1, masks updated every 3 steps."""
    model = _model()
    x, y = _data()
    callback = kerasllm.callbacks.Pruning(0.75, frequency=3, begin_step=1, initial_sparsity=0.25)
    probe = _Probe(callback)
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[callback, probe], verbose=0)
    return model, callback, probe


def test_sparsity_follows_the_schedule_and_is_exact_at_end_step(scheduled_run):
    model, callback, probe = scheduled_run
    assert callback._end_step == 8
    last_update = None
    for step, record in probe.records:
        if step in (1, 4, 7, 8):
            last_update = step
        expected = 0.0 if last_update is None else pruning.polynomial_sparsity(last_update, 0.25, 0.75, 1, 8)
        for mask, kernel, effective in record.values():
            assert (mask == 0).sum() == round(expected * mask.size), (step, expected)
            np.testing.assert_array_equal(kernel[mask == 0], 0)
            np.testing.assert_array_equal(effective[mask == 0], 0)
    # Stripped at the end: plain layers, exactly 75% zeros in every layer.
    assert not model.non_trainable_variables
    for path, kernel in _kernels(model).items():
        assert (kernel == 0).sum() == 0.75 * kernel.size, path
        final_mask = probe.records[-1][1][path][0]
        np.testing.assert_array_equal(kernel == 0, final_mask == 0)


def test_two_four_pattern_holds_in_every_group_after_fit():
    model = _model()
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0,
              callbacks=[kerasllm.callbacks.Pruning(0.5, structure="2:4", frequency=2)])
    for path, kernel in _kernels(model).items():
        inputs, outputs = kernel.shape
        nonzero = (kernel != 0).reshape(inputs // 4, 4, outputs).sum(axis=1)
        np.testing.assert_array_equal(nonzero, 2, err_msg=path)


class _Garbage(keras.callbacks.Callback):
    """Before every step, writes large values into the pruned positions of the raw kernels."""

    def on_train_batch_begin(self, batch, logs=None):
        for layer in pruning.prunable_layers(self.model):
            holder = pruning.get_mask_holder(layer)
            mask = ops.convert_to_numpy(holder.mask)
            kernel = ops.convert_to_numpy(layer.kernel)
            layer.kernel.assign(np.where(mask == 0, 100.0, kernel))


def test_compiled_step_computes_with_the_mask_and_pruned_weights_stay_zero():
    # begin at step 0 with a constant 50% schedule; masks are fixed after step 0 (frequency > steps).
    x, y = _data()
    results = []
    for garbage in (False, True):
        model = _model(optimizer=keras.optimizers.SGD(0.5))
        callback = kerasllm.callbacks.Pruning(0.5, schedule="constant", frequency=1000, end_step=1000)
        probe = _Probe(callback)
        extra = [_Garbage()] if garbage else []
        history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[callback, *extra, probe])
        results.append((history.history["loss"], _kernels(model), probe.records))
    (clean_loss, clean_kernels, clean_records), (garbage_loss, garbage_kernels, _) = results
    # Garbage in the pruned positions changes neither the loss nor the update: the step only sees
    # kernel * mask, so the pruned weights get no gradient.
    np.testing.assert_allclose(garbage_loss, clean_loss, rtol=1e-6)
    for path in clean_kernels:
        np.testing.assert_allclose(garbage_kernels[path], clean_kernels[path], atol=1e-6)
    first_masks = {path: value[0] for path, value in clean_records[0][1].items()}
    for _, record in clean_records:
        for path, (mask, kernel, _) in record.items():
            np.testing.assert_array_equal(mask, first_masks[path])
            np.testing.assert_array_equal(kernel[mask == 0], 0)
            assert (mask == 0).mean() == 0.5
    initial = _kernels(_model(optimizer=keras.optimizers.SGD(0.5)))
    for path, kernel in clean_kernels.items():  # the kept weights did train
        kept = first_masks[path] == 1
        assert np.abs(kernel[kept] - initial[path][kept]).max() > 1e-6


def test_pruned_model_saves_plain_and_reloads_in_a_fresh_process(scheduled_run, tmp_path, run_in_fresh_process):
    model = scheduled_run[0]
    x, _ = _data()
    path = str(tmp_path / "pruned.keras")
    model.save(path)
    expected = ops.convert_to_numpy(model(x[:2]))
    np.save(tmp_path / "x.npy", x[:2])
    output = run_in_fresh_process(
        "import keras, numpy as np, kerasllm\n"
        f"model = keras.saving.load_model({path!r})\n"
        "kernels = [w for w in model.weights if w.path.endswith('kernel') and 'block_' in w.path]\n"
        "print('ZEROS', min(float((keras.ops.convert_to_numpy(w) == 0).mean()) for w in kernels))\n"
        "print('NONTRAINABLE', len(model.non_trainable_variables))\n"
        f"np.save({str(tmp_path / 'logits.npy')!r}, keras.ops.convert_to_numpy(model(np.load({str(tmp_path / 'x.npy')!r}))))\n"
    )
    assert "ZEROS 0.75" in output and "NONTRAINABLE 0" in output
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), expected)


def _lm_data():
    ids = np.random.default_rng(0).integers(0, 61, size=4 * 2 * 9 + 3)
    return kerasllm.data.LanguageModelingDataset(ids, sequence_length=8, batch_size=2, seed=5)


class _Stop(Exception):
    pass


class _Crash(keras.callbacks.Callback):
    def __init__(self, checkpoint, after):
        super().__init__()
        self.checkpoint, self.after = checkpoint, after

    def on_train_batch_end(self, batch, logs=None):
        if self.checkpoint.step == self.after:
            raise _Stop()


def _resumable_run(directory, crash_after=None):
    data = _lm_data()
    model = _model()
    callback = kerasllm.callbacks.Pruning(0.5, frequency=2, strip_on_train_end=False)
    checkpoint = kerasllm.callbacks.Checkpoint(directory, every_n_steps=1, dataset=data, callbacks=[callback])
    probe = _Probe(callback)
    callbacks = [checkpoint, callback, probe] + ([_Crash(checkpoint, crash_after)] if crash_after else [])
    try:
        model.fit(data, epochs=2, shuffle=False, verbose=0, callbacks=callbacks)
    except _Stop:
        return None
    return model, callback, probe


def test_resume_through_checkpoint_keeps_the_masks_exactly(tmp_path):
    model, callback, probe = _resumable_run(str(tmp_path / "straight"))
    assert callback.step == 8 and callback.last_update_step == 8
    assert _resumable_run(str(tmp_path / "resumed"), crash_after=3) is None
    saved = kerasllm.callbacks.Checkpoint.latest(str(tmp_path / "resumed"))
    assert saved["step"] == 3 and saved["callbacks"]["0:Pruning"]["last_update_step"] == 2
    resumed_model, resumed_callback, resumed_probe = _resumable_run(str(tmp_path / "resumed"))
    assert [step for step, _ in resumed_probe.records] == [4, 5, 6, 7, 8]
    straight = dict(probe.records)
    for step, record in resumed_probe.records:
        for path, (mask, kernel, _) in record.items():
            np.testing.assert_array_equal(mask, straight[step][path][0], err_msg=f"{path} at step {step}")
            np.testing.assert_allclose(kernel, straight[step][path][1], atol=1e-6)
    # The masks of step 2 (sparsity below the target) were restored, not recomputed or reset to ones.
    assert 0 < (straight[4][next(iter(straight[4]))][0] == 0).mean() < 0.5


def test_pruning_composes_with_quantization_aware_training():
    qat = getattr(kerasllm.callbacks, "QuantizationAwareTraining", None)
    if qat is None:
        pytest.skip("kerasllm.callbacks.QuantizationAwareTraining is not available")
    model = _model()
    x, y = _data()
    callback = kerasllm.callbacks.Pruning(0.5, structure="2:4", frequency=2)
    quantization = qat(mode="int8")  # converts at the end of training, before Pruning's on_train_end
    seen = []

    class Order(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for layer in pruning.prunable_layers(self.model):
                registered = layer.__dict__.get("_kerasllm_transforms") or {}
                seen.append(sorted(registered, key=lambda key: registered[key][0]))
                mask = ops.convert_to_numpy(pruning.get_mask_holder(layer).mask)
                effective = ops.convert_to_numpy(dense_transforms.transformed_kernel(layer))
                np.testing.assert_array_equal(effective[mask == 0], 0)  # zeros survive fake quant

    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[quantization, callback, Order()])
    assert seen and all(keys == ["pruning", "qat"] for keys in seen)
    for layer in pruning.prunable_layers(model):
        assert pruning.get_mask_holder(layer) is None and not dense_transforms.has_transform(layer, "pruning")
        assert layer.quantization_mode == "int8"
        quantized = ops.convert_to_numpy(layer._kernel)
        inputs, outputs = quantized.shape
        np.testing.assert_array_equal((quantized != 0).reshape(inputs // 4, 4, outputs).sum(axis=1) <= 2, True)
    assert np.isfinite(ops.convert_to_numpy(model(x[:1]))).all()
