"""TensorFlow data parallelism: `kerasllm.distribution.mirrored_strategy()` over two virtual CPU devices
trains like one device.

TensorFlow fixes its logical devices when it starts, so the two-replica check runs in ONE fresh interpreter
that configures them first; it prints its findings as JSON.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import kerasllm

# One xdist worker runs this file, so its module fixtures are built once (tests/run.sh).
pytestmark = pytest.mark.xdist_group("test_tf_mirrored")

tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="tf.distribute.MirroredStrategy needs KERAS_BACKEND=tensorflow")

SCRIPT = r'''
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import kerasllm

CONFIG = dict(vocabulary_size=61, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
              max_sequence_length=16)
tokens = np.random.default_rng(0).integers(0, 61, size=(24, 17)).astype("int32")
x, y = tokens[:, :-1], tokens[:, 1:]
keras.utils.set_random_seed(0)
init = kerasllm.models.CausalLM(**CONFIG).get_weights()

def train(model):
    model.set_weights(init)
    # The default jit_compile: kerasllm models turn XLA on, except under a strategy with several replicas.
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=kerasllm.losses.CausalLMLoss())
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)  # 3 steps of 8
    return history.history["loss"][0], [np.asarray(w) for w in model.get_weights()]

def max_diff(a, b):
    return float(max(np.max(np.abs(u - v)) for u, v in zip(a, b)))

out = {}
ref_loss, ref_weights = train(kerasllm.models.CausalLM(**CONFIG))
strategy = kerasllm.distribution.mirrored_strategy()
out["replicas"] = strategy.num_replicas_in_sync
out["devices"] = list(strategy.extended.worker_devices)
with strategy.scope():
    model = kerasllm.models.CausalLM(**CONFIG)
    loss, weights = train(model)
out["variable_class"] = type(model.weights[0].value).__name__
out["jit_compile"] = bool(model.jit_compile)
out["loss"], out["ref_loss"] = loss, ref_loss
out["weight_diff"] = max_diff(weights, ref_weights)
out["moved"] = max_diff(weights, init)
out["named"] = kerasllm.distribution.mirrored_strategy(["cpu:1", "CPU:0"]).num_replicas_in_sync
kerasllm.distribution.check_batch_size(8, strategy)
try:
    kerasllm.distribution.check_batch_size(7, strategy)
    out["odd_batch_error"] = None
except ValueError as error:
    out["odd_batch_error"] = str(error)
print("RESULT" + json.dumps(out))
'''


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-4000:]
    return json.loads([line for line in process.stdout.splitlines() if line.startswith("RESULT")][-1][6:])


@tensorflow_only
def test_two_replicas_train_like_one_device(result):
    assert result["replicas"] == 2
    assert result["devices"] == ["/job:localhost/replica:0/task:0/device:CPU:0",
                                 "/job:localhost/replica:0/task:0/device:CPU:1"]
    assert result["variable_class"] == "MirroredVariable"
    assert result["jit_compile"] is False  # XLA cannot span the replicas; kerasllm turns it off itself
    assert result["moved"] > 1e-3  # training changed the weights, so agreeing below means something
    np.testing.assert_allclose(result["loss"], result["ref_loss"], atol=1e-5)
    assert result["weight_diff"] < 1e-5


@tensorflow_only
def test_named_devices_and_batch_check(result):
    assert result["named"] == 2
    assert "batch_size 7 is not divisible by the number of data-parallel replicas (2)" in result["odd_batch_error"]
    assert "e.g. 6 or 8" in result["odd_batch_error"]


def test_bad_devices():
    if keras.backend.backend() != "tensorflow":
        with pytest.raises(ValueError, match="needs the TensorFlow backend.*torch_data_parallel"):
            kerasllm.distribution.mirrored_strategy()
        return
    with pytest.raises(ValueError, match="Unknown device type 'npu'"):
        kerasllm.distribution.mirrored_strategy("npu")
    with pytest.raises(ValueError, match="TPUStrategy"):
        kerasllm.distribution.mirrored_strategy("tpu")
    with pytest.raises(ValueError, match="Unknown device 'cpu:99'"):
        kerasllm.distribution.mirrored_strategy(["cpu:99"])
    with pytest.raises(ValueError, match="empty list"):
        kerasllm.distribution.mirrored_strategy([])
    with pytest.raises(ValueError, match="twice"):
        kerasllm.distribution.mirrored_strategy(["cpu:0", "CPU:0"])
    assert kerasllm.distribution.mirrored_strategy("cpu").num_replicas_in_sync == 1


def test_check_batch_size_counts_replicas():
    class Replicas:  # what check_batch_size reads from a tf.distribute strategy
        num_replicas_in_sync = 4

    kerasllm.distribution.check_batch_size(12, Replicas())
    with pytest.raises(ValueError, match="not divisible by the number of data-parallel replicas \\(4\\)"):
        kerasllm.distribution.check_batch_size(10, Replicas())
