"""Peak resident memory and time of reading a ~1 GB bf16 safetensors checkpoint one tensor at a time.

Writes a Llama-shaped checkpoint with `kerasllm.utils.safetensors_io.write_safetensors` (also measured,
in both of its modes), then reads every tensor, one at a time, dropping each, with five strategies:

- `safe_open kept`: one `safetensors.safe_open(path, framework="numpy")` open for the whole file.
- `safe_open per tensor`: a new `safe_open` for each tensor.
- `mmap + copy`: our header parse, one `mmap` of the file, each tensor copied out of it.
- `mmap + copy + DONTNEED`: the same, with `madvise(MADV_DONTNEED)` on each tensor's pages after the copy.
- `pread (SafetensorsCheckpoint.get)`: `os.preadv` into a fresh array, what the library does.

Each run is its own process. Peak memory is the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs after the imports) minus its resident set just before the loop, so imports do not
count. The file is read once before each run, so every strategy reads from a warm page cache. The
generated file is deleted at the end. Linux only (/proc).

    python benchmarks/safetensors_read_memory.py [--folder /tmp/st_bench] [--repeats 2]
"""

import os
import sys

# benchmarks/compression.py would shadow the standard library's `compression` package that JAX imports.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

# Settings: a Llama-like model in bf16, ~1.07 GB; the largest tensor (embeddings, lm_head) is 131 MB.
VOCABULARY, HIDDEN, INTERMEDIATE, LAYERS = 32000, 2048, 5632, 8
SHARD = "250MB"  # for the sharded write rows
STRATEGIES = ["safe_open kept", "safe_open per tensor", "mmap + copy", "mmap + copy + DONTNEED", "pread (get)"]
WRITES = ["write (name, array)", "write (name, shape, dtype, producer)"]


def shapes():
    yield "model.embed_tokens.weight", (VOCABULARY, HIDDEN)
    for i in range(LAYERS):
        for name in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            yield f"model.layers.{i}.self_attn.{name}.weight", (HIDDEN, HIDDEN)
        for name, shape in [("gate_proj", (INTERMEDIATE, HIDDEN)), ("up_proj", (INTERMEDIATE, HIDDEN)),
                            ("down_proj", (HIDDEN, INTERMEDIATE))]:
            yield f"model.layers.{i}.mlp.{name}.weight", shape
        yield f"model.layers.{i}.input_layernorm.weight", (HIDDEN,)
    yield "lm_head.weight", (VOCABULARY, HIDDEN)


def memory_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def child(strategy, folder):
    import mmap

    import ml_dtypes
    import numpy as np
    from safetensors import safe_open

    from kerasllm.utils import safetensors_io

    def fill(i, shape):
        return lambda: np.full(shape, i % 7, ml_dtypes.bfloat16)

    path = os.path.join(folder, safetensors_io.SINGLE_FILE)
    checkpoint = None if strategy in WRITES else safetensors_io.SafetensorsCheckpoint(folder)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    start_kb, start = memory_kb("VmRSS"), time.perf_counter()
    if strategy == "write (name, array)":
        tensors = ((name, fill(i, shape)()) for i, (name, shape) in enumerate(shapes()))
        safetensors_io.write_safetensors(tensors, folder + "-sharded", max_shard_size=SHARD)
    elif strategy == "write (name, shape, dtype, producer)":
        specs = ((name, shape, "bfloat16", fill(i, shape)) for i, (name, shape) in enumerate(shapes()))
        safetensors_io.write_safetensors(specs, folder + "-sharded", max_shard_size=SHARD)
    elif strategy == "safe_open kept":
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)
                del tensor
    elif strategy == "safe_open per tensor":
        for name in checkpoint.keys():
            with safe_open(path, framework="numpy") as f:
                tensor = f.get_tensor(name)
            del tensor
    elif strategy.startswith("mmap"):
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        for name in checkpoint.keys():
            _, dtype, shape, begin, end = checkpoint._entries[name]
            tensor = np.frombuffer(mapped, safetensors_io._DTYPES[dtype], (end - begin) // 2, begin).copy()
            del tensor
            if strategy.endswith("DONTNEED"):
                aligned = begin - begin % mmap.PAGESIZE
                mapped.madvise(mmap.MADV_DONTNEED, aligned, end - aligned)
        mapped.close()
    else:
        for name in checkpoint.keys():
            tensor = checkpoint.get(name)
            del tensor
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_mb": (memory_kb("VmHWM") - start_kb) / 1024, "seconds": seconds}))


def run(strategy, folder):
    result = subprocess.run(
        [sys.executable, __file__, "--child", strategy, "--folder", folder],
        check=True, capture_output=True, text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", default="/tmp/st_bench")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.folder)

    import ml_dtypes
    import numpy as np

    from kerasllm.utils import safetensors_io

    try:
        tensors = ((name, np.full(shape, 1, ml_dtypes.bfloat16)) for name, shape in shapes())
        start = time.perf_counter()
        safetensors_io.write_safetensors(tensors, args.folder, max_shard_size="100GB")
        size = os.path.getsize(os.path.join(args.folder, safetensors_io.SINGLE_FILE))
        largest = max(2 * np.prod(shape) for _, shape in shapes())
        print(f"checkpoint: {size / 1e6:.0f} MB bf16, largest tensor {largest / 1e6:.0f} MB, "
              f"written in {time.perf_counter() - start:.1f} s; {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.1f}")
        print(f"{'strategy':40s} {'peak MB':>9s} {'seconds':>8s}   (median of {args.repeats}; peak: max)")
        for strategy in STRATEGIES + WRITES:
            results = []
            for _ in range(args.repeats):
                with open(os.path.join(args.folder, safetensors_io.SINGLE_FILE), "rb") as f:
                    while f.read(1 << 24):  # warm the page cache: every run reads from memory, not disk
                        pass
                results.append(run(strategy, args.folder))
                shutil.rmtree(args.folder + "-sharded", ignore_errors=True)
            peak = max(r["peak_mb"] for r in results)
            seconds = statistics.median(r["seconds"] for r in results)
            print(f"{strategy:40s} {peak:9.0f} {seconds:8.2f}")
    finally:
        shutil.rmtree(args.folder, ignore_errors=True)
        shutil.rmtree(args.folder + "-sharded", ignore_errors=True)


if __name__ == "__main__":
    main()
