"""`SafetensorsCheckpoint` and `write_safetensors`: round trips, the Hugging Face layout, memory, errors."""

import json
import os
import re
import struct
import weakref

import ml_dtypes
import numpy as np
import pytest

from kerasllm.utils.safetensors_io import (
    INDEX_FILE,
    SINGLE_FILE,
    SafetensorsCheckpoint,
    parse_size,
    write_safetensors,
)

# Only the transformers test is slow to set up (importing transformers); keep it in one worker.
pytestmark = pytest.mark.xdist_group("test_safetensors_io")

RNG = np.random.default_rng(0)
TENSORS = {
    "embed.weight": RNG.normal(size=(50, 16)).astype(np.float32),
    "layers.0.attention.weight": RNG.normal(size=(16, 16)).astype(ml_dtypes.bfloat16),
    "layers.0.norm.weight": RNG.normal(size=(16,)).astype(np.float16),
    "layers.0.mlp.weight": RNG.normal(size=(16, 32)).astype(ml_dtypes.bfloat16),
    "position_ids": np.arange(24, dtype=np.int64).reshape(2, 12),
    "scale": np.array(0.5, np.float32),
    "mask": np.array([True, False, True]),
}


def checkpoint_files(directory):
    return sorted(f for f in os.listdir(directory) if not f.startswith("config"))


def assert_same(checkpoint, tensors):
    assert checkpoint.keys() == sorted(tensors)
    for name, expected in tensors.items():
        array = checkpoint.get(name)
        assert array.dtype == expected.dtype and array.shape == expected.shape == checkpoint.shape(name)
        np.testing.assert_array_equal(array, expected)
        assert array.flags.owndata and array.flags.writeable  # a copy, not a view of a map


def test_single_file_round_trip_and_reference_reader(tmp_path):
    from safetensors.numpy import load_file

    paths = write_safetensors(TENSORS.items(), tmp_path)
    assert paths == [str(tmp_path / SINGLE_FILE)] and checkpoint_files(tmp_path) == [SINGLE_FILE]
    with SafetensorsCheckpoint(tmp_path) as checkpoint:
        assert_same(checkpoint, TENSORS)
        assert checkpoint.dtype("layers.0.attention.weight") == "BF16" and checkpoint.dtype("scale") == "F32"
        assert checkpoint.dtype("position_ids") == "I64" and checkpoint.dtype("layers.0.norm.weight") == "F16"
        assert checkpoint.file_of("scale") == str(tmp_path / SINGLE_FILE)
        assert checkpoint.total_bytes() == sum(t.nbytes for t in TENSORS.values())
        assert "scale" in checkpoint and "missing" not in checkpoint
    loaded = load_file(tmp_path / SINGLE_FILE)  # the safetensors package reads what we wrote
    assert sorted(loaded) == sorted(TENSORS)
    for name, expected in TENSORS.items():
        np.testing.assert_array_equal(loaded[name], expected)
    with open(tmp_path / SINGLE_FILE, "rb") as f:
        length = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(length))
    assert header.pop("__metadata__") == {"format": "pt"}
    # Every tensor starts at a multiple of its item size in the file, as the safetensors package writes them.
    assert length % 8 == 0
    for name, info in header.items():
        assert info["data_offsets"][0] % TENSORS[name].itemsize == 0, name


def test_sharded_round_trip_splits_like_huggingface_hub(tmp_path):
    from huggingface_hub import split_state_dict_into_shards_factory

    tensors = dict(TENSORS, big=np.ones((40, 40), np.float32))  # 6400 bytes: over the limit, a shard of its own
    paths = write_safetensors(tensors.items(), tmp_path, max_shard_size=2000)
    split = split_state_dict_into_shards_factory(
        tensors, get_storage_size=lambda a: a.nbytes, filename_pattern="model{suffix}.safetensors", max_shard_size=2000
    )
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert index["weight_map"] == split.tensor_to_filename
    parameters = sum(t.size for t in tensors.values())
    assert index["metadata"] == {"total_size": split.metadata["total_size"], "total_parameters": parameters}
    assert paths == [str(tmp_path / f) for f in sorted(split.filename_to_tensors)] + [str(tmp_path / INDEX_FILE)]
    assert checkpoint_files(tmp_path) == sorted([*split.filename_to_tensors, INDEX_FILE])
    with SafetensorsCheckpoint(tmp_path) as checkpoint:
        assert_same(checkpoint, tensors)
        assert checkpoint.file_of("big") == str(tmp_path / split.tensor_to_filename["big"])
        assert checkpoint.total_bytes() == index["metadata"]["total_size"]


def test_shards_read_by_safetensors_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    write_safetensors(TENSORS.items(), tmp_path, max_shard_size="3KB")
    weight_map = json.loads((tmp_path / INDEX_FILE).read_text())["weight_map"]
    assert len(set(weight_map.values())) == 2
    for name, file in weight_map.items():
        loaded = load_file(tmp_path / file)[name]
        expected = TENSORS[name]
        if expected.dtype == ml_dtypes.bfloat16:
            assert loaded.dtype == torch.bfloat16
            expected = expected.astype(np.float32)
            loaded = loaded.float()
        np.testing.assert_array_equal(loaded.numpy(), expected)


def test_get_casts(tmp_path):
    write_safetensors(TENSORS.items(), tmp_path)
    checkpoint = SafetensorsCheckpoint(tmp_path)
    bf16 = TENSORS["layers.0.mlp.weight"]
    as_float32 = checkpoint.get("layers.0.mlp.weight", dtype="float32")
    assert as_float32.dtype == np.float32
    np.testing.assert_array_equal(as_float32, bf16.astype(np.float32))  # bf16 -> f32 is exact
    as_bf16 = checkpoint.get("embed.weight", dtype="bfloat16")
    assert as_bf16.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(as_bf16, TENSORS["embed.weight"].astype(ml_dtypes.bfloat16))
    assert checkpoint.get("embed.weight", dtype=np.float16).dtype == np.float16
    assert checkpoint.get("position_ids", dtype=np.dtype("int32")).dtype == np.int32
    checkpoint.close()
    np.testing.assert_array_equal(checkpoint.get("scale"), 0.5)  # reopens after `close`
    checkpoint.close()


def test_producers_write_the_same_bytes_and_cast(tmp_path):
    write_safetensors(TENSORS.items(), tmp_path / "arrays", max_shard_size=3000)
    calls = []

    def producer(name):
        def produce():
            calls.append(name)
            array = TENSORS[name]
            return array.astype(np.float32) if array.dtype == ml_dtypes.bfloat16 else array  # cast back on write

        return produce

    specs = ((name, array.shape, array.dtype.name, producer(name)) for name, array in TENSORS.items())
    write_safetensors(specs, tmp_path / "producers", max_shard_size=3000)
    assert sorted(calls) == sorted(TENSORS)
    for file in checkpoint_files(tmp_path / "arrays"):
        assert (tmp_path / "arrays" / file).read_bytes() == (tmp_path / "producers" / file).read_bytes(), file
    bad = [("w", (2, 3), "float32", lambda: np.zeros((3, 2), np.float32))]
    with pytest.raises(ValueError, match=r"producer of 'w' returned shape \(3, 2\), expected \(2, 3\)"):
        write_safetensors(bad, tmp_path / "bad")
    assert checkpoint_files(tmp_path / "bad") == []


def test_memory_is_one_shard_of_arrays_or_one_produced_tensor(tmp_path):
    alive = {}

    def make(i):
        array = np.full((100,), i, np.float32)  # 400 bytes: one tensor per 400-byte shard
        alive[i] = weakref.ref(array)
        return array

    def live_before(i):
        return {j for j, ref in alive.items() if j < i and ref() is not None}

    def arrays():
        for i in range(6):
            # The previous tensor waits in the shard being filled; every earlier shard is written and freed.
            assert live_before(i) <= {i - 1}, (i, live_before(i))
            yield f"t{i}", make(i)

    write_safetensors(arrays(), tmp_path / "arrays", max_shard_size=400)
    assert len(checkpoint_files(tmp_path / "arrays")) == 7

    def produce(i):
        assert live_before(i) == set(), (i, live_before(i))  # each produced tensor is dropped once written
        return make(i)

    alive.clear()
    specs = ((f"t{i}", (100,), "float32", lambda i=i: produce(i)) for i in range(6))
    write_safetensors(specs, tmp_path / "producers", max_shard_size=1000)
    assert len(alive) == 6 and len(checkpoint_files(tmp_path / "producers")) == 4


def test_failing_generator_leaves_no_checkpoint_and_keeps_the_old_one(tmp_path):
    def failing(count):
        for i in range(count):
            yield f"t{i}", np.full((100,), i, np.float32)
        raise RuntimeError("conversion failed")

    for max_shard_size in [10**6, 500]:  # single file, then shards
        with pytest.raises(RuntimeError, match="conversion failed"):
            write_safetensors(failing(4), tmp_path / "new", max_shard_size=max_shard_size)
        assert os.listdir(tmp_path / "new") == []  # no model.safetensors, no shard, no temporary file

    write_safetensors(TENSORS.items(), tmp_path / "old")
    with pytest.raises(RuntimeError, match="conversion failed"):
        write_safetensors(failing(4), tmp_path / "old", max_shard_size=500)
    assert checkpoint_files(tmp_path / "old") == [SINGLE_FILE]
    assert_same(SafetensorsCheckpoint(tmp_path / "old"), TENSORS)


def test_rewrite_removes_the_previous_layout(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    write_safetensors(TENSORS.items(), tmp_path, max_shard_size=1000)
    assert len(checkpoint_files(tmp_path)) > 3
    write_safetensors(TENSORS.items(), tmp_path, max_shard_size=3000)  # fewer shards: old names must go
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert checkpoint_files(tmp_path) == [*shards, INDEX_FILE]
    assert_same(SafetensorsCheckpoint(tmp_path), TENSORS)
    write_safetensors(TENSORS.items(), tmp_path)
    assert checkpoint_files(tmp_path) == [SINGLE_FILE]
    write_safetensors(TENSORS.items(), tmp_path, max_shard_size=3000)  # model.safetensors would shadow the index
    assert SINGLE_FILE not in checkpoint_files(tmp_path)
    assert_same(SafetensorsCheckpoint(tmp_path), TENSORS)
    assert (tmp_path / "config.json").exists()


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("500MB") == 5 * 10**8 and parse_size("100KB") == 10**5
    assert parse_size("1.5 gb") == 15 * 10**8 and parse_size("1GiB") == 2**30 and parse_size(123) == 123
    for bad in ["5 gigs", "GB", "-1MB", 0]:
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


def test_writer_rejects_bad_input(tmp_path):
    cases = [
        ([("a", np.zeros(2)), ("a", np.zeros(2))], "unique strings.*'a'"),
        ([("__metadata__", np.zeros(2))], "'__metadata__'"),
        ([("c", np.zeros(2, np.complex64))], "'c' has dtype complex64, which safetensors cannot store"),
        ([("a", np.zeros(2), "float32")], r"Expected \(name, array\)"),
        ([], "no tensors"),
    ]
    for tensors, message in cases:
        with pytest.raises(ValueError, match=message):
            write_safetensors(tensors, tmp_path)
        assert os.listdir(tmp_path) == []


# --- Damaged or incomplete checkpoints: each error names the file and the fix. ---


def sharded(tmp_path):
    write_safetensors(TENSORS.items(), tmp_path, max_shard_size=3000)
    return json.loads((tmp_path / INDEX_FILE).read_text())


def test_missing_folder_or_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"No checkpoint folder at '{tmp_path / 'nope'}'")):
        SafetensorsCheckpoint(tmp_path / "nope")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0")
    with pytest.raises(FileNotFoundError) as error:
        SafetensorsCheckpoint(tmp_path)
    for part in [str(tmp_path), "'model.safetensors'", INDEX_FILE, "pytorch_model.bin", "`.bin`",
                 "save_pretrained(directory, safe_serialization=True)"]:
        assert part in str(error.value)


def test_damaged_index(tmp_path):
    sharded(tmp_path)
    for text, detail in [("{not json", "JSONDecodeError"), ('{"metadata": {}}', "KeyError"),
                         ('{"weight_map": ["a"]}', "not a {tensor name: file name} mapping")]:
        (tmp_path / INDEX_FILE).write_text(text)
        with pytest.raises(ValueError, match=re.escape(f"The index '{tmp_path / INDEX_FILE}' is damaged")) as error:
            SafetensorsCheckpoint(tmp_path)
        assert detail in str(error.value) and "Download it again" in str(error.value)


def test_missing_shard(tmp_path):
    sharded(tmp_path)
    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(FileNotFoundError, match="Shard 'model-00002-of-00002.safetensors' named in .* is missing"):
        SafetensorsCheckpoint(tmp_path)


def test_truncated_shard(tmp_path):
    from safetensors import SafetensorError, safe_open

    sharded(tmp_path)
    path = tmp_path / "model-00001-of-00002.safetensors"
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 10)
    with pytest.raises(SafetensorError):  # the reference reader agrees the file is bad
        safe_open(path, framework="numpy")
    expected = f"'{path}' is damaged: its header describes {size} bytes, the file has {size - 10}. Download it again"
    with pytest.raises(ValueError, match=re.escape(expected)):
        SafetensorsCheckpoint(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(100)  # inside the header
    with pytest.raises(ValueError, match=re.escape(f"'{path}' is damaged: it has 100 bytes, its header length field says")):
        SafetensorsCheckpoint(tmp_path)


def rewrite_header(path, edit):
    """Rewrites the JSON header of a safetensors file with `edit(header)`, keeping the data."""
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = edit(json.loads(data[8:8 + length]))
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + length:])


def test_corrupted_headers(tmp_path):
    path = tmp_path / SINGLE_FILE

    def set_field(name, field, value):
        def edit(header):
            header[name][field] = value
            return header

        return edit

    cases = [
        (lambda header: b"\xff garbage", "UnicodeDecodeError|JSONDecodeError"),
        (lambda header: b"[1, 2]", "a JSON list, not an object"),
        (set_field("scale", "dtype", "F12"), "missing or unknown 'F12'"),
        (set_field("scale", "shape", [2]), r"'scale': 4 bytes for shape \(2,\) of F32"),
        (set_field("scale", "shape", [-1]), "'scale' has a bad shape or offsets"),
        (set_field("mask", "data_offsets", [0, 3]), "starts at byte 0, not 3: tensors overlap or leave a gap"),
    ]
    for edit, detail in cases:
        write_safetensors(TENSORS.items(), tmp_path)
        rewrite_header(path, edit)
        with pytest.raises(ValueError, match=re.escape(f"'{path}' is damaged: its header is corrupted")) as error:
            SafetensorsCheckpoint(tmp_path)
        assert re.search(detail, str(error.value)), (detail, str(error.value))
    with open(path, "r+b") as f:
        f.write(struct.pack("<Q", 2**40))
    with pytest.raises(ValueError, match=f"damaged: it has .* bytes, its header length field says {2**40}"):
        SafetensorsCheckpoint(tmp_path)


def test_index_and_shards_disagree(tmp_path):
    index = sharded(tmp_path)
    shards = sorted(set(index["weight_map"].values()))
    norm_shard = index["weight_map"]["layers.0.norm.weight"]
    other = next(f for f in shards if f != norm_shard)
    for name, file in [("layers.0.norm.weight", other), ("extra.weight", shards[0])]:  # wrong shard, no shard
        edited = {"metadata": index["metadata"], "weight_map": dict(index["weight_map"], **{name: file})}
        (tmp_path / INDEX_FILE).write_text(json.dumps(edited))
        expected = f"{INDEX_FILE} in '{tmp_path}' lists tensor '{name}' in '{file}', but that shard does not hold it"
        with pytest.raises(ValueError, match=re.escape(expected)):
            SafetensorsCheckpoint(tmp_path)
    sharded(tmp_path)  # now the same tensor in both shards
    first = index["weight_map"]["embed.weight"]
    second = next(f for f in shards if f != first)
    write_safetensors({"embed.weight": TENSORS["embed.weight"], "scale": TENSORS["scale"]}, tmp_path / "dup")
    os.replace(tmp_path / "dup" / SINGLE_FILE, tmp_path / second)
    expected = f"Tensor 'embed.weight' is stored twice in '{tmp_path}', in '{first}' and '{second}'"
    with pytest.raises(ValueError, match=re.escape(expected)):
        SafetensorsCheckpoint(tmp_path)


def test_unknown_name_lists_close_names(tmp_path):
    write_safetensors(TENSORS.items(), tmp_path)
    checkpoint = SafetensorsCheckpoint(tmp_path)
    for method in [checkpoint.get, checkpoint.shape, checkpoint.dtype, checkpoint.file_of]:
        with pytest.raises(ValueError, match=r"No tensor 'layers.0.mlp.weights' in .*'layers.0.mlp.weight'"):
            method("layers.0.mlp.weights")


# --- transformers reads what we write and we read what it writes. ---


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    model = transformers.LlamaForCausalLM(config)
    directory = tmp_path_factory.mktemp("llama")
    model.save_pretrained(directory, max_shard_size="100KB")
    return directory, model


def test_transformers_checkpoint_round_trip(llama_dir, tmp_path):
    import transformers

    directory, model = llama_dir
    state = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    index = json.loads((directory / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) == 2
    with SafetensorsCheckpoint(directory) as checkpoint:
        assert checkpoint.keys() == sorted(state) and checkpoint.total_bytes() == index["metadata"]["total_size"]
        for name, expected in state.items():
            np.testing.assert_array_equal(checkpoint.get(name), expected)
            assert checkpoint.file_of(name) == str(directory / index["weight_map"][name])
        # Written back in the state dict's order, the split and the index are transformers' own, byte for byte.
        tensors = ((name, checkpoint.get(name)) for name in state)
        write_safetensors(tensors, tmp_path, max_shard_size="100KB")
    assert (tmp_path / INDEX_FILE).read_text() == (directory / INDEX_FILE).read_text()
    model.config.save_pretrained(tmp_path)
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path)
    for name, tensor in loaded.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), state[name])
