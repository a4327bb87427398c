"""Data and model parallelism on 8 virtual CPU devices (JAX), checked against one device.

JAX fixes its device count when it starts, so every check runs in ONE fresh interpreter started with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`; it prints its findings as JSON.
"""

import json
import os
import subprocess
import sys

import keras
import pytest

pytestmark = [
    pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution is JAX-only"),
    pytest.mark.xdist_group("test_multi_device"),  # one worker builds the module fixtures once (tests/run.sh)
]

SCRIPT = r'''
import json, os, tempfile
import numpy as np
import keras
import jax
import kerasllm

assert len(jax.devices()) == 8
CONFIG = dict(vocabulary_size=64, num_layers=2, num_heads=8, num_key_value_heads=4, hidden_dim=32,
              intermediate_dim=64, max_sequence_length=16, position_embedding="rotary",
              normalization="rmsnorm", activation="swiglu", use_bias=True, tie_word_embeddings=False)
rng = np.random.default_rng(0)
tokens = rng.integers(0, 64, size=(16, 13)).astype("int32")
x, y = tokens[:, :-1], tokens[:, 1:]
keras.utils.set_random_seed(0)
init = kerasllm.models.CausalLM(**CONFIG).get_weights()

def train(model):
    model.set_weights(init)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=kerasllm.losses.CausalLMLoss())
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    history2 = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return [history.history["loss"][0], history2.history["loss"][0]], [np.asarray(w) for w in model.get_weights()]

def max_diff(a, b):
    return float(max(np.max(np.abs(u - v)) for u, v in zip(a, b)))

def spec(variable):
    return tuple(variable.value.sharding.spec) + (None,) * (len(variable.shape) - len(variable.value.sharding.spec))

out = {}
reference = kerasllm.models.CausalLM(**CONFIG)
ref_loss, ref_weights = train(reference)
prompt = np.array([[1, 2, 3, 4]], "int32")
# Greedy decoding by full forward passes on one device: the reference for the sharded cached `generate`.
ids = prompt
for _ in range(4):
    ids = np.concatenate([ids, np.argmax(np.asarray(reference(ids))[:, -1:], axis=-1).astype("int32")], axis=1)
ref_generated = ids.tolist()
out["ref_loss"] = ref_loss

# --- data parallel ---
kerasllm.distribution.data_parallel()
model = kerasllm.models.CausalLM(**CONFIG)
loss, weights = train(model)
out["dp_loss"] = loss
out["dp_weight_diff"] = max_diff(weights, ref_weights)
out["dp_replicated"] = all(all(a is None for a in spec(v)) for v in model.weights)
out["dp_devices"] = len(model.weights[0].value.sharding.device_set)
keras.distribution.set_distribution(None)

# --- model parallel, 2 x 4: an existing model resharded in place ---
model = kerasllm.models.CausalLM(**CONFIG)
distribution = kerasllm.distribution.model_parallel(model, model_dim=4)
layout_map = model.get_layout_map(distribution.device_mesh)
mismatched = [v.path for v in model.weights if spec(v) != tuple(layout_map[v.path].axes)]
out["mp_mismatched"] = mismatched
kernel = [v for v in model.weights if v.path.endswith("block_0/attention/key/kernel")][0]
out["mp_key_shard_shape"] = list(kernel.value.addressable_shards[0].data.shape)
out["mp_specs"] = {v.path.split("/", 1)[1]: [a for a in spec(v)] for v in model.weights}
loss, weights = train(model)
out["mp_loss"] = loss
out["mp_weight_diff"] = max_diff(weights, ref_weights)
out["mp_specs_after_fit"] = [v.path for v in model.weights if spec(v) != tuple(layout_map[v.path].axes)]
generated = np.asarray(model.generate(prompt, max_new_tokens=4, greedy=True))
out["mp_generated"] = np.concatenate([prompt, generated[:, -4:]], axis=1).tolist()
out["ref_generated"] = ref_generated

# --- from a layout map alone: a model built afterwards is created sharded and computes as one device ---
keras.distribution.set_distribution(None)
small_copy = kerasllm.models.CausalLM(**dict(CONFIG, num_layers=1))  # the rules do not depend on depth
kerasllm.distribution.model_parallel(layout_map=small_copy.get_layout_map(distribution.device_mesh))
built_inside = kerasllm.models.CausalLM(**CONFIG)
out["inside_mismatched"] = [v.path for v in built_inside.weights if spec(v) != tuple(layout_map[v.path].axes)]
built_inside.set_weights(init)
keras.distribution.set_distribution(None)
fresh = kerasllm.models.CausalLM(**CONFIG)  # on one device
fresh.set_weights(init)
assert len(fresh.weights[0].value.sharding.device_set) == 1
out["inside_logits_diff"] = float(np.max(np.abs(np.asarray(built_inside(x[:8])) - np.asarray(fresh(x[:8])))))
kerasllm.distribution.model_parallel(model, model_dim=4)

# --- save and reload while sharded ---
path = os.path.join(tempfile.mkdtemp(), "sharded.keras")
model.save(path)
reloaded = keras.saving.load_model(path)
out["reload_weight_diff"] = max_diff([np.asarray(w) for w in reloaded.get_weights()], weights)
out["reload_mismatched"] = [v.path for v in reloaded.weights if spec(v) != tuple(layout_map[v.path].axes)]
probe = tokens[:8, :12]
out["reload_logits_diff"] = float(np.max(np.abs(np.asarray(reloaded(probe)) - np.asarray(model(probe)))))

# --- a model that already exists: one epoch on one device, then distributed in place, then the second ---
def train_across(distribute):
    keras.distribution.set_distribution(None)
    model = kerasllm.models.CausalLM(**CONFIG)
    model.set_weights(init)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=kerasllm.losses.CausalLMLoss())
    first = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    assert len(model.optimizer.variables[-1].value.sharding.device_set) == 1
    distribute(model)
    second = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    state = [*model.variables, *model.metrics_variables, *model.optimizer.variables]
    return model, state, [first, second], [np.asarray(w) for w in model.get_weights()]

existing, state, loss, weights = train_across(lambda model: kerasllm.distribution.data_parallel(model=model))
out["dp_existing_loss"] = loss
out["dp_existing_weight_diff"] = max_diff(weights, ref_weights)
out["dp_existing_not_replicated"] = [v.path for v in state if len(v.value.sharding.device_set) != 8
                                     or any(a is not None for a in spec(v))]
existing, state, loss, weights = train_across(lambda model: kerasllm.distribution.model_parallel(model, model_dim=4))
out["mp_existing_loss"] = loss
out["mp_existing_weight_diff"] = max_diff(weights, ref_weights)
slots = existing.optimizer.variables
out["mp_existing_key_slots"] = {v.path: list(spec(v)) for v in slots if "block_0_attention_key_kernel" in v.path}
# Keras names a slot `<weight path with "/" as "_">_<slot name>`; each must be laid out as its weight.
out["mp_existing_misplaced_slots"] = [
    v.path for v in slots for w in existing.trainable_variables
    if v.path.split("/")[-1].startswith(w.path.replace("/", "_") + "_") and tuple(v.shape) == tuple(w.shape)
    and spec(v) != spec(w)]
keras.distribution.set_distribution(None)
print("RESULT" + json.dumps(out))
'''


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=8",
               CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    line = [line for line in run.stdout.splitlines() if line.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_data_parallel_matches_one_device(result):
    assert result["dp_devices"] == 8 and result["dp_replicated"]
    assert max(abs(a - b) for a, b in zip(result["dp_loss"], result["ref_loss"])) < 1e-5
    assert result["dp_weight_diff"] < 1e-5


def test_a_model_that_already_exists_is_distributed_in_place(result):
    # Trained one epoch on one device (optimizer and metrics built), then distributed: without moving
    # its weights, Keras's next train step fails to compile on mixed devices. The optimizer's slots and
    # the metrics' state, still on one device, take their layouts from that step's outputs.
    for mode in ("dp", "mp"):
        assert max(abs(a - b) for a, b in zip(result[f"{mode}_existing_loss"], result["ref_loss"])) < 1e-5
        assert result[f"{mode}_existing_weight_diff"] < 1e-5
    assert result["dp_existing_not_replicated"] == []
    # The key kernel is split over "model" along its columns: so are its two AdamW slots.
    assert sorted(result["mp_existing_key_slots"].values()) == [[None, "model"], [None, "model"]]
    assert result["mp_existing_misplaced_slots"] == []


def test_model_parallel_matches_one_device(result):
    assert max(abs(a - b) for a, b in zip(result["mp_loss"], result["ref_loss"])) < 1e-5
    assert result["mp_weight_diff"] < 1e-5


def test_every_variable_has_its_promised_sharding(result):
    assert result["mp_mismatched"] == [] and result["mp_specs_after_fit"] == []
    assert result["inside_mismatched"] == []
    assert result["inside_logits_diff"] < 1e-5
    specs = result["mp_specs"]
    # Megatron pairing, grouped-query key (32 -> 4 heads x 4 dims = 16 columns, 4 per device).
    assert specs["backbone/block_0/attention/key/kernel"] == [None, "model"]
    assert result["mp_key_shard_shape"] == [32, 4]
    assert specs["backbone/block_0/attention/output/kernel"] == ["model", None]
    assert specs["backbone/block_1/feedforward/gate/kernel"] == [None, "model"]
    assert specs["backbone/block_1/feedforward/output/kernel"] == ["model", None]
    assert specs["backbone/token_embedding/embeddings"] == ["model", None]
    assert specs["lm_head/kernel"] == [None, "model"]
    assert specs["backbone/final_norm/scale"] == [None]


def test_sharded_model_saves_reloads_and_generates(result):
    assert result["reload_weight_diff"] == 0.0
    assert result["reload_mismatched"] == []
    assert result["reload_logits_diff"] < 1e-5
    assert result["mp_generated"] == result["ref_generated"]
