"""Several hosts: two JAX processes on 127.0.0.1, four virtual CPU devices each, train data-parallel
over all eight devices through `keras.distribution.initialize` and agree with one device."""

import json

import keras
import numpy as np
import pytest

import kerasllm

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution is JAX-only")

CONFIG = dict(vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
              max_sequence_length=16)

WORKER = r'''
import json, sys
import numpy as np
import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
import keras
import kerasllm

process_id, port, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
keras.distribution.initialize(job_addresses=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
assert len(jax.devices()) == 8 and len(jax.local_devices()) == 4
kerasllm.distribution.data_parallel(auto_shard_dataset=False)
data = np.load(f"{folder}/data.npz")
model = kerasllm.models.CausalLM(**json.loads(data["config"].item()))
model.set_weights([data[f"w{i}"] for i in range(len(model.weights))])
model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=kerasllm.losses.CausalLMLoss())
# Each process feeds its own half of every global batch of 8: rows [4p, 4p + 4) of each batch.
x, y = data["x"], data["y"]
rows = np.concatenate([np.arange(start + 4 * process_id, start + 4 * process_id + 4) for start in (0, 8)])
history = model.fit(x[rows], y[rows], batch_size=4, epochs=2, shuffle=False, verbose=0)
weights = [np.asarray(jax.device_get(w)) for w in model.get_weights()]
np.savez(f"{folder}/weights{process_id}.npz", *weights)
print("RESULT" + json.dumps(history.history["loss"]))
'''


def test_two_processes_train_like_one_device(tmp_path, run_workers):
    model = kerasllm.models.CausalLM(**CONFIG)
    init = model.get_weights()
    tokens = np.random.default_rng(0).integers(0, 64, size=(16, 13)).astype("int32")
    x, y = tokens[:, :-1], tokens[:, 1:]
    np.savez(tmp_path / "data.npz", x=x, y=y, config=json.dumps(CONFIG), **{f"w{i}": w for i, w in enumerate(init)})

    outputs = run_workers(WORKER, 2, args=[tmp_path], env=dict(
        KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
        CUDA_VISIBLE_DEVICES=""))

    # The one-device reference, here in the test's own process, from the same weights and batches.
    model.set_weights(init)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=kerasllm.losses.CausalLMLoss())
    reference = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]

    assert outputs[0] == outputs[1]  # one global loss, seen by both processes
    np.testing.assert_allclose(outputs[0], reference, atol=1e-5)
    for i in range(2):
        trained = np.load(tmp_path / f"weights{i}.npz")
        for j, expected in enumerate(model.get_weights()):
            np.testing.assert_allclose(trained[f"arr_{j}"], expected, atol=1e-5)
