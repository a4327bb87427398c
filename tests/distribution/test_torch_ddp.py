"""PyTorch data parallelism: two processes (gloo on 127.0.0.1) train `model.fit` on their halves of every global
batch through `kerasllm.distribution.torch_data_parallel` and reach the weights of one process on the whole
batches."""

import json

import keras
import numpy as np
import pytest

import kerasllm

torch_only = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="torch.distributed data parallelism needs KERAS_BACKEND=torch")

CONFIG = dict(vocabulary_size=61, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
              max_sequence_length=16)
GLOBAL_BATCH = 8

WORKER = r'''
import json, sys
import numpy as np
import keras
import torch
import kerasllm

rank, port, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
assert kerasllm.distribution.init_process_group(rank=rank, world_size=2, port=port, backend="gloo") == (rank, 2)
data = np.load(f"{folder}/data.npz")
init = [data[f"w{i}"] for i in range(int(data["n_weights"]))]
keras.utils.set_random_seed(100 + rank)  # the ranks start apart; rank 0's weights must reach rank 1
model = kerasllm.models.CausalLM(**json.loads(data["config"].item()))
if rank == 0:
    model.set_weights(init)
out = {"start_diff": float(max(np.max(np.abs(w - v)) for w, v in zip(model.get_weights(), init)))}
parallel = kerasllm.distribution.torch_data_parallel(model)
out["received_diff"] = float(max(np.max(np.abs(w - v)) for w, v in zip(model.get_weights(), init)))
out["rank"], out["world_size"] = parallel.rank, parallel.world_size
errors = {}
for name, bad in [("odd_batch", lambda: parallel.local_batch_size(7)),
                  ("ragged_data", lambda: parallel.shard(data["x"][:20], 8)),
                  ("twice", lambda: kerasllm.distribution.torch_data_parallel(model)),
                  ("check_batch_size", lambda: kerasllm.distribution.check_batch_size(7, parallel))]:
    try:
        bad()
        errors[name] = None
    except ValueError as error:
        errors[name] = str(error)
out["errors"] = errors
model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=kerasllm.losses.CausalLMLoss())
x, y = parallel.shard((data["x"], data["y"]), global_batch_size=8)
out["rows"] = len(x)
history = model.fit(x, y, batch_size=parallel.local_batch_size(8), epochs=1, shuffle=False, verbose=0)
out["loss"] = history.history["loss"][0]
np.savez(f"{folder}/weights{rank}.npz", *model.get_weights())

class Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches, self.epochs = [], []
    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(float(logs["loss"]))
    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({key: float(value) for key, value in logs.items()})

before, after = Record(), Record()  # the logs as each process computes them, and as averaged
history = model.fit(x, y, batch_size=parallel.local_batch_size(8), epochs=1, shuffle=False, verbose=0,
                    validation_data=(x, y), callbacks=[before, parallel.average_logs(), after])
out["logs_before"], out["logs_after"] = before.batches, after.batches
out["epoch_before"], out["epoch_after"] = before.epochs[0], after.epochs[0]
out["history"] = {key: values[0] for key, values in history.history.items()}
local = model.evaluate(x, y, batch_size=parallel.local_batch_size(8), verbose=0, return_dict=True)
out["evaluate_local"], out["evaluate_mean"] = local, parallel.average(local)
out["rank_mean"] = parallel.average(rank)
parallel.close()
torch.distributed.destroy_process_group()
print("RESULT" + json.dumps(out))
'''


@torch_only
def test_two_processes_train_like_one_process(tmp_path, run_workers):
    keras.utils.set_random_seed(0)
    model = kerasllm.models.CausalLM(**CONFIG)
    init = model.get_weights()
    tokens = np.random.default_rng(0).integers(0, 61, size=(3 * GLOBAL_BATCH, 17)).astype("int32")
    x, y = tokens[:, :-1], tokens[:, 1:]
    np.savez(tmp_path / "data.npz", x=x, y=y, config=json.dumps(CONFIG), n_weights=len(init),
             **{f"w{i}": w for i, w in enumerate(init)})

    outputs = run_workers(WORKER, 2, args=[tmp_path], env=dict(KERAS_BACKEND="torch", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1"))

    # One process on the whole global batches, from the same weights: the reference.
    model.set_weights(init)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=kerasllm.losses.CausalLMLoss())
    reference_loss = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    reference = model.get_weights()

    assert [(o["rank"], o["world_size"]) for o in outputs] == [(0, 2), (1, 2)]
    assert outputs[0]["start_diff"] == 0 and outputs[1]["start_diff"] > 1e-2  # rank 1 really started elsewhere
    assert outputs[0]["received_diff"] == outputs[1]["received_diff"] == 0  # broadcast from rank 0
    assert outputs[0]["rows"] == outputs[1]["rows"] == 3 * GLOBAL_BATCH // 2
    # Each rank logs the loss of its own half; equal halves make their mean the global loss.
    np.testing.assert_allclose((outputs[0]["loss"] + outputs[1]["loss"]) / 2, reference_loss, atol=1e-5)
    assert abs(outputs[0]["loss"] - outputs[1]["loss"]) > 1e-4  # the halves really differ
    weights = [np.load(tmp_path / f"weights{rank}.npz") for rank in range(2)]
    assert max(np.max(np.abs(w - v)) for w, v in zip(reference, init)) > 1e-3  # training moved the weights
    for j, expected in enumerate(reference):
        np.testing.assert_array_equal(weights[0][f"arr_{j}"], weights[1][f"arr_{j}"])
        np.testing.assert_allclose(weights[0][f"arr_{j}"], expected, atol=1e-5)

    # average_logs: every process logs the mean of the processes' values, batch by batch and per epoch
    # (validation included), and History keeps the means; average() does the same for evaluate's result.
    before = np.array([o["logs_before"] for o in outputs])
    assert np.max(np.abs(before[0] - before[1])) > 1e-4
    for o in outputs:
        np.testing.assert_allclose(o["logs_after"], before.mean(axis=0), rtol=1e-6)
        assert set(o["epoch_after"]) == {"loss", "val_loss"}
        for key in ("loss", "val_loss"):
            expected = np.mean([p["epoch_before"][key] for p in outputs])
            np.testing.assert_allclose([o["epoch_after"][key], o["history"][key]], expected, rtol=1e-6)
        np.testing.assert_allclose(o["evaluate_mean"]["loss"],
                                   np.mean([p["evaluate_local"]["loss"] for p in outputs]), rtol=1e-6)
        assert o["rank_mean"] == 0.5
    assert outputs[0]["epoch_before"]["val_loss"] != outputs[1]["epoch_before"]["val_loss"]

    errors = outputs[0]["errors"]
    assert "global batch size 7 is not divisible by the number of processes (2)" in errors["odd_batch"]
    assert "e.g. 6 or 8" in errors["odd_batch"]
    assert "20 rows, not a whole number of global batches of 8" in errors["ragged_data"]
    assert "already averages its gradients" in errors["twice"]
    assert "not divisible by the number of data-parallel replicas (2)" in errors["check_batch_size"]


@torch_only
def test_shard_takes_each_ranks_rows_of_every_global_batch():
    parallel = kerasllm.distribution.TorchDataParallel.__new__(kerasllm.distribution.TorchDataParallel)
    parallel.rank, parallel.world_size = 1, 2  # the slicing alone, without a process group
    x = np.arange(16).reshape(8, 2)
    shard_x, shard_y = parallel.shard((x, np.arange(8)), global_batch_size=4)
    np.testing.assert_array_equal(shard_y, [2, 3, 6, 7])
    np.testing.assert_array_equal(shard_x, x[[2, 3, 6, 7]])
    assert parallel.local_batch_size(4) == 2

    ids = np.arange(200) % 61
    dataset = kerasllm.data.LanguageModelingDataset(ids, sequence_length=8, batch_size=4, shuffle=True, seed=0)
    sharded = parallel.shard(dataset, global_batch_size=4)
    assert len(sharded) == len(dataset) > 1
    for _ in range(2):  # the second pass checks that the epoch's reshuffle reaches the wrapped dataset
        for i in range(len(dataset)):
            for got, full in zip(sharded[i], dataset[i]):
                np.testing.assert_array_equal(got, full[2:4])
        first = dataset[0][0].copy()
        sharded.on_epoch_end()
    assert not np.array_equal(dataset[0][0], first)
    with pytest.raises(ValueError, match="has \\[4\\] rows, but the global batch size is 8"):
        parallel.shard(dataset, global_batch_size=8)[0]


def test_bad_input_without_a_process_group(monkeypatch):
    model = kerasllm.models.CausalLM(**CONFIG)
    if keras.backend.backend() != "torch":
        with pytest.raises(ValueError, match="needs the torch backend.*mirrored_strategy"):
            kerasllm.distribution.torch_data_parallel(model)
        with pytest.raises(ValueError, match="needs the torch backend"):
            kerasllm.distribution.init_process_group(rank=0, world_size=1)
        return
    with pytest.raises(ValueError, match="Call kerasllm.distribution.init_process_group\\(\\) first"):
        kerasllm.distribution.torch_data_parallel(model)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="pass `rank=` and `world_size=`, or start the script with torchrun"):
        kerasllm.distribution.init_process_group()
    with pytest.raises(ValueError, match="rank must be an integer in \\[0, 2\\)"):
        kerasllm.distribution.init_process_group(rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size must be a positive integer"):
        kerasllm.distribution.init_process_group(rank=0, world_size=0)
