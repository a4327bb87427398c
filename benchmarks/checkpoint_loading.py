"""Time and peak memory of loading a pretrained Hugging Face checkpoint: kerasllm (each backend),
transformers and KerasHub, on the same directory.

Run (from the repository root):

    python benchmarks/checkpoint_loading.py                          # ~349M Llama, bf16 on disk (~700 MB)
    python benchmarks/checkpoint_loading.py --small                  # ~22M Llama: a smoke run of every variant
    python benchmarks/checkpoint_loading.py --max-shard-size 200MB   # the same, written in shards
    python benchmarks/checkpoint_loading.py --profile kerasllm-torch-float32   # where kerasllm's load time goes

Options: `--repeats N` (default 2), `--variants a,b` (names as in the table), `--folder` (default
/tmp/kerasllm_checkpoint_loading[_small]), `--keep` (do not delete the checkpoint at the end),
`--json PATH` (all settings, raw runs and the table).

The checkpoint is a Llama written by `transformers`' `save_pretrained` (bf16, default shard size unless
`--max-shard-size`): built on the meta device, moved to empty CPU memory and filled with small normal noise
(norm scales 1), so making it takes seconds, not minutes of random initialization. It is reused when the
folder already holds one with the same settings, and deleted at the end unless `--keep`.

Each measurement is a fresh process (RSS starts clean) that imports everything first, then:
- `before`: VmRSS after the imports, one tiny matmul on the backend (which starts its runtime: thread
  pools, JAX's CPU client) and a `gc.collect()`; VmHWM is then reset (/proc/self/clear_refs),
- times the load call, up to weights that are usable: JAX's asynchronous transfers are waited for,
- `peak`: VmHWM after the load (and the page-in below): the highest RSS since; `increase` = peak - before;
- `model`: the bytes of the model's weights in their dtype (sum over its variables / parameters),
- transformers only, `+ page-in s`: reading one byte of every 4 KiB page of its weights after the call. Loaded
  in the checkpoint's dtype (bf16 here), transformers' parameters are views of the memory-mapped file and the
  call reads almost none of it; the first forward pass would. The time target counts that page-in; the pages
  are shared with the page cache and show as `file-backed` RSS. kerasllm's and KerasHub's weights are copies
  in anonymous memory, resident when the call returns,
- then, after the memory readings, runs a fixed 16-token prompt and saves its logits, which the parent compares
  with transformers' float32 logits, so a broken load cannot be timed: float32 variants must agree within 1e-3
  and give the same greedy next tokens; bfloat16 ones within a loose bound (a wrong or transposed tensor is
  far off; near-ties make bf16's greedy tokens differ, so `same next tokens` is shown, not required).
Before the first repeat of each variant the checkpoint's pages are dropped from the page cache
(posix_fadvise DONTNEED, our own files only), so `first s` is a cold read from disk; later repeats read
from a warm cache, and `load s` is their median (the first run's when --repeats 1).

The memory target is judged on `increase / model`, not on the absolute peak: what a process holds before
the call is the framework's import footprint (TensorFlow's is several hundred MB), not the load's. At
`--small` size, fixed costs of a few tens of MiB (building the model, first calls into the backend) dominate
a 41 MiB model, so only the full size says anything about the target.
Memory is in MiB (2**20 bytes). Timings on a shared machine are not comparable: the load average is printed
and stored with each run.
"""

import os
import sys

# Python puts this folder first on sys.path; benchmarks/compression.py would shadow Python 3.14's
# `compression` package, which JAX imports when it starts.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [path for path in sys.path if os.path.abspath(path or ".") != _HERE]

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

# ----------------------------------------------------------------------------------------------------
# Settings
SHAPES = {
    # ~349M parameters, 0.70 GB in bf16; Llama-2-like proportions with grouped-query attention.
    "full": dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=24,
                 num_attention_heads=16, num_key_value_heads=8),
    # ~22M parameters: every variant end to end in a few minutes.
    "small": dict(vocab_size=16000, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                  num_attention_heads=6, num_key_value_heads=2),
}
MAX_POSITIONS = 2048
INIT_STD = 0.02  # weights: normal(0, INIT_STD); norm scales: 1
SEED = 0
PROMPT_LENGTH = 16
DEFAULT_FOLDER = "/tmp/kerasllm_checkpoint_loading"
BACKENDS = ("jax", "torch", "tensorflow")
DTYPES = ("bfloat16", "float32")
# (library, backend) pairs; each runs at both dtypes. KerasHub's loader also runs on every backend.
LIBRARIES = [("kerasllm", b) for b in BACKENDS] + [("transformers", "torch")] + [("keras_hub", b) for b in BACKENDS]
FLOAT32_TOLERANCE = 1e-3  # max |logit difference| against transformers float32
BFLOAT16_TOLERANCE = 0.25  # the same, as a fraction of the reference logits' standard deviation
TARGET_MEMORY = 1.3  # peak increase at most 1.3x the model's size in its dtype
CHILD_TIMEOUT_S = 1800
SETTINGS_FILE = "checkpoint_loading_settings.json"  # written next to the checkpoint, to know when to reuse it


def variant_name(library, backend, dtype):
    return f"{library}-{backend}-{dtype}"


VARIANTS = [variant_name(library, backend, dtype) for library, backend in LIBRARIES for dtype in DTYPES]


# ----------------------------------------------------------------------------------------------------
# Process memory (Linux)

def status_kb(*fields):
    """`{field: kB}` from /proc/self/status (VmRSS, VmHWM, RssAnon, RssFile)."""
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in fields:
                found[key] = int(line.split()[1])
    return found


def reset_peak():
    """Resets VmHWM to the current resident set, so it then records the peak of what follows."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def cached_fraction(paths):
    """Fraction of the files' pages in the page cache (mincore on a private map)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    resident = total = 0
    for path in paths:
        size = os.path.getsize(path)
        if not size:
            continue
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vector = (ctypes.c_ubyte * pages)()
        buffer = ctypes.c_char.from_buffer(mapped)
        if libc.mincore(ctypes.addressof(buffer), size, vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        del buffer
        mapped.close()
        resident += sum(byte & 1 for byte in vector)
        total += pages
    return resident / total if total else 0.0


def checkpoint_files(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".safetensors"))


def evict(folder):
    """Drops the checkpoint's (clean) pages from the page cache: the next read comes from disk."""
    for path in checkpoint_files(folder):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages (a checkpoint just written) cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------------------------------
# The checkpoint

def make_checkpoint(folder, shape_name, max_shard_size):
    """Writes (or reuses) a bf16 Llama checkpoint with `save_pretrained`; returns its description."""
    settings = dict(shape=SHAPES[shape_name], max_positions=MAX_POSITIONS, init_std=INIT_STD, seed=SEED,
                    max_shard_size=max_shard_size)
    settings_path = os.path.join(folder, SETTINGS_FILE)
    reused = False
    if os.path.isfile(settings_path):
        with open(settings_path) as f:
            reused = json.load(f) == settings
    seconds = 0.0
    if not reused:
        import torch
        import transformers

        shutil.rmtree(folder, ignore_errors=True)
        start = time.perf_counter()
        config = transformers.LlamaConfig(**SHAPES[shape_name], max_position_embeddings=MAX_POSITIONS,
                                          tie_word_embeddings=False, dtype="bfloat16")
        with torch.device("meta"):
            model = transformers.LlamaForCausalLM(config)
        model = model.to(torch.bfloat16).to_empty(device="cpu")  # memory without random initialization
        generator = torch.Generator().manual_seed(SEED)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.ndim == 1:
                    parameter.fill_(1.0)
                else:
                    parameter.normal_(0.0, INIT_STD, generator=generator)
        kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
        model.save_pretrained(folder, **kwargs)
        del model
        with open(settings_path, "w") as f:
            json.dump(settings, f)
        seconds = time.perf_counter() - start
    files = checkpoint_files(folder)
    size = sum(os.path.getsize(path) for path in files)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    parameters = _count_parameters(folder)
    return dict(folder=folder, files=len(files), bytes=size, parameters=parameters, reused=reused,
                write_s=seconds, config=config, settings=settings)


def _count_parameters(folder):
    import math
    import struct

    count = 0
    for path in checkpoint_files(folder):
        with open(path, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        header.pop("__metadata__", None)
        count += sum(math.prod(info["shape"]) for info in header.values())
    return count


def prompt(vocabulary_size):
    import numpy as np

    return (np.arange(1, PROMPT_LENGTH + 1, dtype="int64") * 7919 % vocabulary_size)[None].astype("int32")


# ----------------------------------------------------------------------------------------------------
# One measurement (child process)

def child(variant, folder, logits_path):
    library, backend, dtype = variant.split("-")
    import gc
    import resource

    import numpy as np

    with open(os.path.join(folder, "config.json")) as f:
        ids = prompt(json.load(f)["vocab_size"])

    if library == "transformers":
        import torch
        import transformers
        from transformers import LlamaForCausalLM  # noqa: F401  (its lazy import before the clock)

        torch_dtype = getattr(torch, dtype)

        def load():
            return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)

        def model_bytes(model):
            return sum(p.numel() * p.element_size() for p in model.parameters())

        def warm_up():
            (torch.ones(4, 4) @ torch.ones(4, 4)).sum().item()

        def logits(model):
            with torch.no_grad():
                return model.eval()(torch.from_numpy(ids.astype("int64"))).logits.float().numpy()

        def page_in(model):
            # Weights loaded in the checkpoint's dtype stay views of the memory-mapped file: reading one byte
            # per 4 KiB page brings them in, as the first forward pass would.
            with torch.no_grad():
                for parameter in model.parameters():
                    int(parameter.detach().reshape(-1).view(torch.uint8)[::4096].sum())
    else:
        import keras

        if library == "kerasllm":
            import kerasllm
            from kerasllm.models.hugging_face import loading  # noqa: F401  (imported before the clock)

            def load():
                return kerasllm.models.CausalLM.from_preset(folder, dtype=dtype)

            def logits(model):
                return keras.ops.convert_to_numpy(model(ids)).astype("float32")
        else:
            import keras_hub
            from keras_hub.src.utils.transformers import preset_loader  # noqa: F401

            def load():
                # model_type "llama" maps to KerasHub's Llama3Backbone; no tokenizer in the folder.
                return keras_hub.models.Llama3CausalLM.from_preset(folder, preprocessor=None, dtype=dtype)

            def logits(model):
                inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids, dtype=bool)}
                return keras.ops.convert_to_numpy(model(inputs)).astype("float32")

        def model_bytes(model):
            return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)

        page_in = None  # Keras variables are copies in anonymous memory: resident once loaded

        def warm_up():
            keras.ops.convert_to_numpy(keras.ops.matmul(keras.ops.ones((4, 4)), keras.ops.ones((4, 4))))

    def ready(model):
        if library != "transformers" and backend == "jax":
            import jax

            jax.block_until_ready([v.value for v in model.weights])

    warm_up()
    gc.collect()
    before_status = status_kb("VmRSS", "RssAnon", "RssFile")
    before = before_status["VmRSS"]
    import_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset_peak()
    load_average = os.getloadavg()
    start = time.perf_counter()
    cpu_start = time.process_time()
    model = load()
    ready(model)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    call_memory = status_kb("VmHWM", "RssFile")
    page_in_seconds = None
    if page_in is not None:
        start = time.perf_counter()
        page_in(model)
        page_in_seconds = time.perf_counter() - start
    memory = status_kb("VmRSS", "VmHWM", "RssAnon", "RssFile")
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = model_bytes(model)
    np.save(logits_path, logits(model))
    print("RESULT " + json.dumps(dict(
        variant=variant, seconds=seconds, cpu_seconds=cpu_seconds, page_in_seconds=page_in_seconds,
        call_peak_mb=call_memory["VmHWM"] / 1024, call_file_mb=call_memory["RssFile"] / 1024, before_mb=before / 1024,
        peak_mb=memory["VmHWM"] / 1024, after_mb=memory["VmRSS"] / 1024, anon_mb=memory["RssAnon"] / 1024,
        file_mb=memory["RssFile"] / 1024, before_anon_mb=before_status["RssAnon"] / 1024,
        before_file_mb=before_status["RssFile"] / 1024, ru_maxrss_mb=ru_maxrss / 1024,
        import_peak_mb=import_peak_kb / 1024,
        model_mb=size / 2**20, load_average=load_average)))


def run_child(variant, folder, logits_path):
    backend = variant.split("-")[1]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, os.path.abspath(__file__), "--child", variant, "--folder", folder,
               "--logits", logits_path]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode or not lines:
        raise RuntimeError(f"{variant} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ----------------------------------------------------------------------------------------------------
# Where kerasllm's load time goes (--profile)

def profile(variant, folder):
    """Times the steps of kerasllm's loader (wrapping its functions) in one load, then cProfile of a second."""
    import cProfile
    import collections
    import gc
    import pstats

    import numpy as np

    import kerasllm
    from kerasllm.models.hugging_face import loading
    from kerasllm.utils import deferred_variables, safetensors_io

    library, backend, dtype = variant.split("-")
    assert library == "kerasllm", "--profile takes a kerasllm variant"
    totals = collections.defaultdict(float)
    counts = collections.Counter()

    def timed(label, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - start
                counts[label] += 1
        return wrapper

    original_get = safetensors_io.SafetensorsCheckpoint.get

    def get(self, name, dtype=None):  # the same work as `get`, the read and the cast timed apart
        array = timed("read tensor (preadv)", original_get)(self, name)
        if dtype is not None and np.dtype(dtype) != array.dtype:
            array = timed("cast dtype (numpy astype)", array.astype)(dtype)
        return array

    original_initialize = deferred_variables.initialize

    def initialize(variable, value=None):
        if value is not None:
            variable._initializer = lambda shape, dtype=None: value
        timed("to variable (_deferred_initialize)", variable._deferred_initialize)()
        timed("registry cleanup (_forget)", deferred_variables._forget)([variable])

    original_load = loading.load_weights_into_new_model

    def load_weights(build, *args, **kwargs):
        return original_load(timed("build model (deferred variables)", build), *args, **kwargs)

    patches = [
        (safetensors_io.SafetensorsCheckpoint, "__init__", timed("open + check headers",
                                                                 safetensors_io.SafetensorsCheckpoint.__init__)),
        (safetensors_io.SafetensorsCheckpoint, "get", get),
        (loading, "read_model_config", timed("read config.json", loading.read_model_config)),
        (loading, "_plan", timed("plan: names + shapes checked", loading._plan)),
        (loading, "to_keras", timed("layout (transpose / split)", loading.to_keras)),
        (deferred_variables, "initialize", initialize),
        (loading, "load_weights_into_new_model", load_weights),
    ]
    for owner, name, value in patches:
        setattr(owner, name, value)

    gc.collect()
    start = time.perf_counter()
    model = kerasllm.models.CausalLM.from_preset(folder, dtype=dtype)
    if backend == "jax":
        import jax

        start_wait = time.perf_counter()
        jax.block_until_ready([v.value for v in model.weights])
        totals["wait for JAX transfers"] += time.perf_counter() - start_wait
    total = time.perf_counter() - start
    del model
    gc.collect()
    deferred_variables.initialize = original_initialize
    print(f"\nkerasllm load breakdown: {variant}, {total:.2f} s in all (load average "
          f"{os.getloadavg()[0]:.2f})\n")
    print("| step | calls | s | share |\n|---|---:|---:|---:|")
    for label, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"| {label} | {counts[label] or 1} | {seconds:.3f} | {seconds / total:.0%} |")
    print(f"| rest (not inside a timed step) | | {total - sum(totals.values()):.3f} | "
          f"{(total - sum(totals.values())) / total:.0%} |")

    profiler = cProfile.Profile()
    profiler.enable()
    model = kerasllm.models.CausalLM.from_preset(folder, dtype=dtype)
    if backend == "jax":
        jax.block_until_ready([v.value for v in model.weights])
    profiler.disable()
    print("\ncProfile of a second load (top 20 by own time):")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


# ----------------------------------------------------------------------------------------------------
# Results

def machine():
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"


def versions():
    from importlib.metadata import version

    return {name: version(name) for name in ("keras", "jax", "torch", "tensorflow", "transformers", "keras-hub",
                                              "numpy", "safetensors")}


def check_logits(variant, logits, reference):
    """`(ok, max |difference|, same greedy next tokens)` against transformers' float32 logits."""
    import numpy as np

    difference = float(np.max(np.abs(logits - reference)))
    same_next = bool((logits.argmax(-1) == reference.argmax(-1)).all())
    if variant.endswith("float32"):
        ok = difference <= FLOAT32_TOLERANCE and same_next
    else:
        ok = difference <= BFLOAT16_TOLERANCE * float(reference.std())
    return ok, difference, same_next


def summarize(variant, runs):
    warm = runs[1:] or runs
    library, backend, dtype = variant.split("-")
    page_in = [r["page_in_seconds"] for r in warm if r["page_in_seconds"] is not None]
    return dict(
        variant=variant, library=library, backend=backend, dtype=dtype,
        load_s=statistics.median(r["seconds"] for r in warm), first_s=runs[0]["seconds"],
        page_in_s=statistics.median(page_in) if page_in else None,
        first_page_in_s=runs[0]["page_in_seconds"],
        cpu_s=statistics.median(r["cpu_seconds"] for r in warm),
        peak_mb=max(r["peak_mb"] for r in runs), before_mb=statistics.median(r["before_mb"] for r in runs),
        increase_mb=max(r["peak_mb"] - r["before_mb"] for r in runs),
        file_increase_mb=max(r["file_mb"] - r["before_file_mb"] for r in runs),
        call_increase_mb=max(r["call_peak_mb"] - r["before_mb"] for r in runs), model_mb=runs[0]["model_mb"],
        load_average=max(r["load_average"][0] for r in runs), cached_first=runs[0].get("cached_before"),
    )


def usable_s(row, first=False):
    """Seconds until the weights are in memory: the call, plus the page-in where the call left them on disk."""
    seconds, page_in = (row["first_s"], row["first_page_in_s"]) if first else (row["load_s"], row["page_in_s"])
    return seconds + (page_in or 0.0)


def table(rows):
    lines = ["| variant | backend | dtype | load s (median) | first s (cold) | + page-in s | peak RSS MiB | "
             "RSS before MiB | increase MiB | of which file-backed | model MiB | increase / model | "
             "max abs logit diff | same next tokens | load avg |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        page_in = "" if r["page_in_s"] is None else f"{r['page_in_s']:.2f} ({r['first_page_in_s']:.2f} cold)"
        lines.append(
            f"| {r['library']} | {r['backend']} | {r['dtype']} | {r['load_s']:.2f} | {r['first_s']:.2f} | {page_in} | "
            f"{r['peak_mb']:.0f} | {r['before_mb']:.0f} | {r['increase_mb']:.0f} | {r['file_increase_mb']:.0f} | "
            f"{r['model_mb']:.0f} | {r['increase_mb'] / r['model_mb']:.2f}x | {r['logit_difference']:.2g} | "
            f"{'yes' if r['same_next'] else 'no'} | {r['load_average']:.2f} |")
    return "\n".join(lines)


def targets(rows):
    """Lines judging each kerasllm row against the issue's targets."""
    by_name = {r["variant"]: r for r in rows}
    lines = []
    for r in rows:
        if r["library"] != "kerasllm":
            continue
        ratio = r["increase_mb"] / r["model_mb"]
        reference = by_name.get(variant_name("transformers", "torch", r["dtype"]))
        memory = (f"increase {r['increase_mb']:.0f} MiB = {ratio:.3f}x model "
                  f"({'met' if ratio <= TARGET_MEMORY else 'MISSED'})")
        if reference:
            ours, theirs = r["load_s"], usable_s(reference)
            speed = (f"{ours:.2f} s vs transformers {theirs:.2f} s"
                     + (f" (call {reference['load_s']:.2f} s + page-in {reference['page_in_s']:.2f} s)"
                        if reference["page_in_s"] else "")
                     + f" = {ours / theirs:.2f}x ({'met' if ours <= theirs else 'MISSED'}); cold: "
                     f"{r['first_s']:.2f} s vs {usable_s(reference, first=True):.2f} s")
        else:
            speed = "no transformers row at this dtype"
        lines.append(f"- {r['variant']}: memory {memory}; time {speed}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="A ~22M-parameter model (smoke run).")
    parser.add_argument("--folder", default=None)
    parser.add_argument("--max-shard-size", default=None, help="e.g. 200MB; default: save_pretrained's.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--keep", action="store_true", help="Keep the generated checkpoint.")
    parser.add_argument("--json", default=None, help="Write settings, raw runs and the table here.")
    parser.add_argument("--profile", default=None, metavar="VARIANT", help="Profile one kerasllm variant.")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--logits", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = "small" if args.small else "full"
    folder = args.folder or DEFAULT_FOLDER + ("_small" if args.small else "")
    if args.child and args.profile:
        return profile(args.child, folder)
    if args.child:
        return child(args.child, folder, args.logits)

    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS) - ({args.profile} if args.profile else set()))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {VARIANTS}")
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    started = datetime.datetime.now()
    checkpoint = make_checkpoint(folder, shape, args.max_shard_size)
    print(f"checkpoint: {folder}, {checkpoint['parameters']:,} parameters, {checkpoint['bytes'] / 1e6:.0f} MB "
          f"bf16 on disk in {checkpoint['files']} file(s), "
          + ("reused" if checkpoint["reused"] else f"written in {checkpoint['write_s']:.1f} s"))
    print(f"device: {machine()}; load average {os.getloadavg()}")
    try:
        if args.profile:  # a fresh process, with KERAS_BACKEND set before Keras is imported
            env = dict(os.environ, KERAS_BACKEND=args.profile.split("-")[1], TF_CPP_MIN_LOG_LEVEL="2")
            subprocess.run([sys.executable, os.path.abspath(__file__), "--child", args.profile, "--profile",
                            args.profile, "--folder", folder], env=env, check=True)
            return
        import numpy as np

        runs = {}
        with tempfile.TemporaryDirectory() as scratch:
            reference_variant = variant_name("transformers", "torch", "float32")
            order = [reference_variant] + [v for v in variants if v != reference_variant]
            for variant in order:
                runs[variant] = []
                for repeat in range(args.repeats):
                    cached = None
                    if repeat == 0:
                        evict(folder)
                        cached = cached_fraction(checkpoint_files(folder))
                    logits_path = os.path.join(scratch, f"{variant}-{repeat}.npy")
                    result = run_child(variant, folder, logits_path)
                    result["cached_before"] = cached
                    result["logits"] = np.load(logits_path)
                    runs[variant].append(result)
                    page_in = result["page_in_seconds"]
                    print(f"  {variant} #{repeat + 1}: {result['seconds']:.2f} s"
                          + ("" if page_in is None else f" + page-in {page_in:.2f} s")
                          + f", peak {result['peak_mb']:.0f} MiB "
                          f"(before {result['before_mb']:.0f}; anon {result['before_anon_mb']:.0f} -> "
                          f"{result['anon_mb']:.0f}, file {result['before_file_mb']:.0f} -> {result['file_mb']:.0f}), "
                          f"model {result['model_mb']:.0f} MiB, load "
                          f"{result['load_average'][0]:.2f}" + ("" if cached is None else f", page cache {cached:.0%}"),
                          flush=True)
        reference = runs[reference_variant][0]["logits"]
        rows, failures = [], []
        for variant in [v for v in VARIANTS if v in runs]:  # with the float32 reference, always run
            row = summarize(variant, runs[variant])
            checks = [check_logits(variant, r["logits"], reference) for r in runs[variant]]
            row["logits_ok"] = all(ok for ok, _, _ in checks)
            row["logit_difference"] = max(d for _, d, _ in checks)
            row["same_next"] = all(s for _, _, s in checks)
            if not row["logits_ok"]:
                failures.append(variant)
            rows.append(row)
        for variant_runs in runs.values():
            for r in variant_runs:
                r.pop("logits")
        finished = datetime.datetime.now()
        print(f"\n## Loading a {checkpoint['parameters'] / 1e6:.0f}M-parameter Llama checkpoint "
              f"({checkpoint['bytes'] / 1e6:.0f} MB bf16, {checkpoint['files']} file(s))\n")
        print(f"- date: {started:%Y-%m-%d %H:%M} to {finished:%H:%M}")
        print(f"- device: {machine()}, no GPU; {platform.python_version()}; {versions()}")
        print(f"- load average (1 min) during the runs: {min(r['load_average'] for r in rows):.2f} to "
              f"{max(r['load_average'] for r in rows):.2f}; at the end {os.getloadavg()}")
        print(f"- command: `{command}`")
        print(f"- {args.repeats} run(s) per variant, each a fresh process; load s: median of the warm-cache runs; "
              "first s: the first run, after the checkpoint's pages were dropped from the page cache; peak, "
              "increase: the largest over the runs.\n")
        print(table(rows))
        print("\nTargets (memory: peak increase over the RSS before the call <= "
              f"{TARGET_MEMORY}x the model's size in its dtype; time: <= transformers at the same dtype, counting "
              "the page-in where transformers' call leaves the weights in the file):")
        print(targets(rows))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(command=command, date=started.isoformat(), device=machine(), versions=versions(),
                               checkpoint=checkpoint, repeats=args.repeats, rows=rows, runs=runs,
                               targets=targets(rows)), f, indent=2)
            print(f"\nresults: {args.json}")
        if failures:
            raise SystemExit(f"logits differ from transformers' float32 reference beyond tolerance: {failures}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
