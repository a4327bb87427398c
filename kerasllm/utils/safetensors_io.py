"""Hugging Face safetensors checkpoints, read and written one tensor at a time with bounded memory.

Pure numpy. A file is an 8-byte little-endian header length, a JSON header `{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}`, then the tensors' bytes. Neither the reading nor
the writing goes through the `safetensors` package: memory-mapped pages (how `safe_open` reads) count in
this process's resident memory while the map is open, and `serialize_file` needs every tensor of a file
alive at once (`benchmarks/safetensors_read_memory.py` has the numbers).
"""

import difflib
import json
import math
import os
import re
import struct

import ml_dtypes
import numpy as np

from kerasllm.utils.atomic import TEMP_PREFIX, fsync_path

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
# safetensors' own limit; a larger length field means a damaged file, not a big header.
_MAX_HEADER_BYTES = 100_000_000
# Raw bytes are read as native dtypes: safetensors is little-endian, like every host numpy runs on.
_DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16, "U32": np.uint32,
    "I32": np.int32, "U64": np.uint64, "I64": np.int64, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F32": np.float32, "F64": np.float64, "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
}
_DTYPES = {name: np.dtype(dtype) for name, dtype in _DTYPES.items()}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_FIX = "Download it again (interrupted downloads and copies leave files out or truncated) or write it again."


class SafetensorsCheckpoint:
    """Read-only view of the safetensors files of a model directory (single file or sharded with an index).

    Every header is checked on opening (no tensor data is read), so a missing shard, a truncated download
    or an inconsistent index fails at once, naming the file. `model.safetensors` is preferred over the
    index when both exist, as in `transformers`. `get` reads one tensor; nothing else stays in memory.

    Args:
        directory: str. A folder holding `model.safetensors`, or `model.safetensors.index.json` and the
            shards it names (what `transformers`' `save_pretrained` writes).

    Example:

    >>> with kerasllm.utils.safetensors_io.SafetensorsCheckpoint("llama-dir") as checkpoint:
    ...     for name in checkpoint.keys():
    ...         weight = checkpoint.get(name, dtype="float32")
    """

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        self._handles = {}
        self._entries = {}  # name -> (file, dtype name, shape, absolute begin, absolute end)
        files, weight_map = self._discover()
        for file in files:
            for name, entry in _read_header(os.path.join(self.directory, file)).items():
                if name in self._entries:
                    raise ValueError(
                        f"Tensor {name!r} is stored twice in {self.directory!r}, in {self._entries[name][0]!r} "
                        f"and {file!r}: the shards come from different saves. {_FIX}"
                    )
                self._entries[name] = (file, *entry)
        for name, file in (weight_map or {}).items():
            if self._entries.get(name, (None,))[0] != file:
                raise ValueError(
                    f"{INDEX_FILE} in {self.directory!r} lists tensor {name!r} in {file!r}, but that shard "
                    f"does not hold it: the index and the shards come from different saves. {_FIX}"
                )

    def _discover(self):
        """The shard files to read, and the index's weight map (`None` for a single file)."""
        if not os.path.isdir(self.directory):
            raise FileNotFoundError(f"No checkpoint folder at {self.directory!r}.")
        if os.path.isfile(os.path.join(self.directory, SINGLE_FILE)):
            return [SINGLE_FILE], None
        index_path = os.path.join(self.directory, INDEX_FILE)
        if not os.path.isfile(index_path):
            raise FileNotFoundError(
                f"No safetensors checkpoint in {self.directory!r}: expected {SINGLE_FILE!r}, or {INDEX_FILE!r} and "
                f"its shards (found {sorted(os.listdir(self.directory))[:10]}). PyTorch `.bin` checkpoints are not "
                "read: load one with `transformers` and `save_pretrained(directory, safe_serialization=True)`."
            )
        try:
            with open(index_path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise TypeError("`weight_map` is not a {tensor name: file name} mapping")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"The index {index_path!r} is damaged ({type(error).__name__}: {error}); it must be JSON with a "
                f'"weight_map" of {{tensor name: shard file}}. {_FIX}'
            ) from None
        files = sorted(set(weight_map.values()))
        for file in files:
            if os.path.basename(file) != file or not os.path.isfile(os.path.join(self.directory, file)):
                raise FileNotFoundError(f"Shard {file!r} named in {index_path!r} is missing. {_FIX}")
        return files, weight_map

    def keys(self):
        """Every tensor name, sorted."""
        return sorted(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def _entry(self, name):
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self._entries, n=5, cutoff=0.5)
            raise ValueError(
                f"No tensor {name!r} in the checkpoint {self.directory!r} ({len(self._entries)} tensors). "
                f"Closest names: {close or sorted(self._entries)[:5]}."
            )
        return self._entries[name]

    def shape(self, name):
        """The shape of tensor `name`, a tuple of ints."""
        return self._entry(name)[2]

    def dtype(self, name):
        """The safetensors dtype string of tensor `name`: "F32", "BF16", "F16", "I64", ..."""
        return self._entry(name)[1]

    def file_of(self, name):
        """The path of the file holding tensor `name`."""
        return os.path.join(self.directory, self._entry(name)[0])

    def total_bytes(self):
        """The size of all tensor data, in bytes (the index's `total_size`)."""
        return sum(end - begin for _, _, _, begin, end in self._entries.values())

    def get(self, name, dtype=None):
        """Reads one tensor into a new array (owned, not a view of a memory map).

        Args:
            name: str. The tensor's name.
            dtype: numpy dtype or str (`"float32"`, `"bfloat16"`, `"float16"`, ...). The dtype to cast
                to. Defaults to `None` (the stored dtype; `BF16` comes back as `ml_dtypes.bfloat16`).

        Returns:
            A numpy array.
        """
        file, dtype_name, shape, begin, end = self._entry(name)
        array = np.empty(shape, _DTYPES[dtype_name])
        handle = self._handles.get(file)
        if handle is None:
            handle = self._handles[file] = open(os.path.join(self.directory, file), "rb", buffering=0)
        # Read into the array itself: no copy, and the pages go to the page cache, not into this
        # process's resident memory as a memory map's would.
        view, done = memoryview(array.reshape(-1).view(np.uint8)), 0
        while done < end - begin:  # one call reads at most ~2 GB
            if hasattr(os, "preadv"):  # positional, so threads may share the handle
                count = os.preadv(handle.fileno(), [view[done:]], begin + done)
            else:  # Windows
                handle.seek(begin + done)
                count = handle.readinto(view[done:])
            if not count:
                raise ValueError(f"{self.file_of(name)!r} got shorter while {name!r} was read. {_FIX}")
            done += count
        if dtype is not None and np.dtype(dtype) != array.dtype:
            array = array.astype(dtype)
        return array

    def close(self):
        """Closes the open files; `get` opens them again if called later."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _read_header(path):
    """`{name: (dtype name, shape, absolute begin, absolute end)}` from one file's header, checked."""
    damaged, fix = f"The safetensors file {path!r} is damaged", _FIX
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        length = struct.unpack("<Q", f.read(8).ljust(8, b"\0"))[0]
        if size < 8 or length > _MAX_HEADER_BYTES or 8 + length > size:
            raise ValueError(f"{damaged}: it has {size} bytes, its header length field says {length}. {fix}")
        raw = f.read(length)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise TypeError(f"a JSON {type(header).__name__}, not an object")
        header.pop("__metadata__", None)
        entries, tensors = {}, []
        for name, info in header.items():
            dtype, shape, (begin, end) = _DTYPES[info["dtype"]], tuple(info["shape"]), info["data_offsets"]
            if not all(isinstance(n, int) and n >= 0 for n in (*shape, begin, end)):
                raise ValueError(f"{name!r} has a bad shape or offsets")
            if end - begin != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"{name!r}: {end - begin} bytes for shape {shape} of {info['dtype']}")
            entries[name] = (info["dtype"], shape, 8 + length + begin, 8 + length + end)
            tensors.append((begin, end, name))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        detail = f"missing or unknown {error}" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
        raise ValueError(f"{damaged}: its header is corrupted ({detail}). {fix}") from None
    position = 0
    for begin, end, name in sorted(tensors):
        if begin != position:
            detail = f"{name!r} starts at byte {begin}, not {position}: tensors overlap or leave a gap"
            raise ValueError(f"{damaged}: its header is corrupted ({detail}). {fix}")
        position = end
    if 8 + length + position != size:
        raise ValueError(f"{damaged}: its header describes {8 + length + position} bytes, the file has {size}. {fix}")
    return entries


def parse_size(size):
    """Bytes from an int or a string like "2GB", "500MB" (decimal, as `transformers`) or "1GiB" (binary)."""
    if isinstance(size, str):
        match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT])(i?)B\s*", size, re.IGNORECASE)
        if not match:
            raise ValueError(f"Cannot read the size {size!r}; write it like '5GB', '500MB' or '1GiB'.")
        base = 1024 if match.group(3) else 1000
        size = float(match.group(1)) * base ** ("KMGT".index(match.group(2).upper()) + 1)
    if size <= 0:
        raise ValueError(f"The shard size must be positive, got {size}.")
    return int(size)


def write_safetensors(tensors, directory, max_shard_size=5 * 2**30, metadata=None):
    """Writes tensors as `model.safetensors`, or as shards with an index when they exceed `max_shard_size`.

    Shards are split and named as `transformers` does (in the given order; a new shard when the next
    tensor would not fit; a tensor over the limit alone). Memory: `(name, array)` items are held until
    their shard is written (peak: about one shard); with `(name, shape, dtype, producer)` items each
    `producer()` is called when its bytes are written, after the header (peak: the largest tensor).
    Files are written under temporary names and renamed into place once all are complete, so a failure
    (e.g. in the generator) leaves the folder's previous checkpoint as it was; its unused files go.

    Args:
        tensors: iterable of `(name, array)` or of `(name, shape, dtype, producer)`, where `producer()`
            returns the array (cast to `dtype` when it differs); a generator, so tensors are made one at
            a time, or a dict. float32/float16/bfloat16/float8/int/uint/bool arrays.
        directory: str. The folder to write to; created if missing.
        max_shard_size: int or str. The most bytes of tensor data per file, e.g. `"2GB"`.
            Defaults to 5 GiB.
        metadata: dict of str to str. The header's `__metadata__`. Defaults to `{"format": "pt"}`, which
            `transformers` requires.

    Returns:
        The paths of the files written (the index last).

    Example:

    >>> weights = {"lm_head.weight": np.zeros((100, 32), ml_dtypes.bfloat16)}
    >>> kerasllm.utils.safetensors_io.write_safetensors(weights, "out", max_shard_size="2GB")
    >>> specs = [("w", (4096, 4096), "bfloat16", lambda: np.ones((4096, 4096), "float32"))]
    >>> kerasllm.utils.safetensors_io.write_safetensors(iter(specs), "out")
    """
    limit = parse_size(max_shard_size)
    tensors = tensors.items() if isinstance(tensors, dict) else tensors
    metadata = {"format": "pt"} if metadata is None else {str(k): str(v) for k, v in metadata.items()}
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    shards = []  # (temporary path, tensor names, bytes, parameters)
    try:
        for group in _plan(tensors, limit):
            shards.append(_write_file(directory, len(shards), group, metadata))
            del group  # else the finished shard's arrays stay alive while the next one fills
        if not shards:
            raise ValueError("`write_safetensors` got no tensors to write.")
        return _commit(directory, shards)
    except BaseException:
        for path, *_ in shards:
            if os.path.exists(path):
                os.remove(path)
        raise


def _plan(tensors, limit):
    """Yields shards (lists of `(name, shape, dtype, producer)`) as `huggingface_hub` splits them."""
    current, size, seen = [], 0, set()
    for item in tensors:
        if len(item) == 2:
            name, array = item[0], np.asarray(item[1])
            spec = (name, array.shape, array.dtype, lambda array=array: array)
        elif len(item) == 4:
            spec = (item[0], tuple(item[1]), np.dtype(item[2]), item[3])
        else:
            raise ValueError(f"Expected (name, array) or (name, shape, dtype, producer), got {len(item)} items.")
        name, shape, dtype = spec[:3]
        if not isinstance(name, str) or name == "__metadata__" or name in seen:
            raise ValueError(f"Tensor names must be unique strings other than '__metadata__'; got {name!r}.")
        if dtype not in _NAMES:
            raise ValueError(f"Tensor {name!r} has dtype {dtype}, which safetensors cannot store.")
        seen.add(name)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > limit:
            yield [spec]
            continue
        if current and size + nbytes > limit:
            yield current
            current, size = [], 0
        current.append(spec)
        size += nbytes
    if current:
        yield current


def _write_file(directory, number, group, metadata):
    """Writes one shard under a temporary name: header from the shapes, then each tensor's bytes."""
    # Wider dtypes first, after a header padded to 8 bytes, keeps every tensor aligned (as safetensors does).
    group = sorted(group, key=lambda spec: (-spec[2].itemsize, spec[0]))
    header = {"__metadata__": metadata} if metadata else {}
    offset = parameters = 0
    for name, shape, dtype, _ in group:
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": _NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset, parameters = offset + nbytes, parameters + math.prod(shape)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    path = os.path.join(directory, f"{TEMP_PREFIX}shard-{number}-{os.getpid()}.safetensors")
    try:
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            for name, shape, dtype, producer in group:
                array = np.asarray(producer(), dtype=dtype, order="C")  # not ascontiguousarray: 0-d would become 1-d
                if array.shape != shape:
                    raise ValueError(f"The producer of {name!r} returned shape {array.shape}, expected {shape}.")
                f.write(memoryview(array.reshape(-1).view(np.uint8)))
                del array
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(path):
            os.remove(path)
        raise
    return path, [spec[0] for spec in group], offset, parameters


def _commit(directory, shards):
    """Renames the finished shards into place, writes the index, and deletes the previous save's files."""
    count = len(shards)
    names = [SINGLE_FILE] if count == 1 else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
    keep = set(names) | ({INDEX_FILE} if count > 1 else set())
    stale = [f for f in os.listdir(directory) if (f in (SINGLE_FILE, INDEX_FILE) or _SHARD_NAME.fullmatch(f))]
    stale = [f for f in stale if f not in keep]
    if count > 1:
        # Readers take model.safetensors before the index: an old one must go before new shards appear, and
        # an old index must not point at a mix of old and new shards while they are renamed.
        for f in (SINGLE_FILE, INDEX_FILE):
            if os.path.exists(os.path.join(directory, f)):
                os.remove(os.path.join(directory, f))
    paths = [os.path.join(directory, name) for name in names]
    for (temporary, *_), path in zip(shards, paths):
        os.replace(temporary, path)
    if count > 1:
        index = {
            "metadata": {"total_parameters": sum(s[3] for s in shards), "total_size": sum(s[2] for s in shards)},
            "weight_map": {tensor: name for (_, tensors, *_), name in zip(shards, names) for tensor in tensors},
        }
        temporary = os.path.join(directory, f"{TEMP_PREFIX}{INDEX_FILE}-{os.getpid()}")
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")  # byte for byte what transformers writes
        fsync_path(temporary)
        os.replace(temporary, os.path.join(directory, INDEX_FILE))
        paths.append(os.path.join(directory, INDEX_FILE))
    for f in stale:
        if os.path.exists(os.path.join(directory, f)):
            os.remove(os.path.join(directory, f))
    fsync_path(directory)
    return paths
