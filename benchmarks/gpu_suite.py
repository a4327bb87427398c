"""GPU suite: GPT-2 124M training and generation tokens/s, kerasllm against KerasHub, on jax and torch.

Run it through `benchmarks/gpu_suite.sh` (which installs missing wheels first), or directly:

    python benchmarks/gpu_suite.py --out "$OUT"              # on a GPU: the GPT-2 124M shape
    python benchmarks/gpu_suite.py --smoke --out /tmp/suite  # CPU only, tiny shape: checks the code path

Every variant (task, backend, model) runs in its own subprocess (KERAS_BACKEND is fixed at the first
Keras import), one after another (two at a time with `--smoke`), each killed at its own timeout and all
of them within `--budget-s`; a variant that is not started for lack of time gets a "skipped" row.
TensorFlow is left out: the targets are for jax and torch. Variants, most important first:

- training: `model.fit` on random token batches, `mixed_bfloat16`, `keras.optimizers.AdamW`,
  `kerasllm.losses.CausalLMLoss()` for `kerasllm.models.CausalLM.from_preset("gpt2-124m")` and
  KerasHub's `GPT2CausalLM` at the same shape (dropout 0, sparse cross-entropy, Keras's own `fit`: see
  `train_worker`); `warmup` untimed steps, then the median of `steps` timed steps (the clock is read
  after forcing each step's loss to a float, as in `train_throughput.py`). tokens/s = B * T / median;
  MFU = flops/token * tokens/s / 989 TFLOP/s (H100 dense bf16), flops/token = 6N + 12 L H Q T
  (nanoGPT's count; N without position embeddings). torch with `jit_compile=False` (Keras's default
  there) and `True` (torch.compile).
- the flash-attention column, read from the training step itself: on jax, the compiled step's
  optimized HLO (an XLA dump) is searched for cuDNN's fused attention (`__cudnn$fmha*` custom calls,
  forward and backward); on torch, two more training steps run under the profiler and the
  scaled-dot-product kernels that ran are named (`flash`, `efficient`, `cudnn`, `math`, `cpu-flash`).
  Besides, each kerasllm training worker probes the op on the model's attention shape: jax,
  `keras.ops.dot_product_attention(..., flash_attention=True)` in bf16; torch, SDPA forward and
  backward under `sdpa_kernel(SDPBackend.FLASH_ATTENTION)` with `flash_sdp_enabled()`.
- generation: greedy decoding of `new_tokens` after a `prompt_length`-token random prompt, batch 1 and
  8, `bfloat16` weights: kerasllm's `generate` (and KerasHub's, last). The first call (compilation) is
  reported apart; tokens/s = new tokens / median of the later calls.

Results: `OUT/gpu_suite.md` (tables, targets met / missed / not measured), `OUT/gpu_suite.json`,
`OUT/gpu_suite.log` (every worker's output). With `--smoke` the numbers are not measurements; the
exit code is 1 if any variant failed, so CI catches a broken path.
"""

import argparse
import concurrent.futures
import dataclasses
import datetime
import functools
import importlib.util
import json
import os
import platform
import re
import runpy
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time


def _load_train_throughput():
    # By path: the benchmarks folder must not be on sys.path, where compression.py would shadow the
    # `compression` package that JAX imports. For the same reason workers run with `python -P`.
    spec = importlib.util.spec_from_file_location(
        "_train_throughput", os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_throughput.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_train_throughput = _load_train_throughput()
count_params = _train_throughput.count_params  # all weights but position embeddings, shared ones once
flops_per_token = _train_throughput.flops_per_token  # 6N + 12 L H Q T
versions = _train_throughput.versions

# ----------------------------------------------------------------------------------------------------
# Settings
PRESET = "gpt2-124m"  # kerasllm preset: L12 H12 C768 F3072, context 1024, vocabulary 50304
SHAPES = {
    # The preset's own shape; B16 x T1024 is nanoGPT's GPT-2 124M benchmark shape.
    "gpu": dict(overrides={}, batch_size=16, seq_len=1024, warmup=5, steps=20,
                prompt_length=16, new_tokens=128, generate_batches=(1, 8), generate_repeats=3),
    # The same code path at a tiny size, CPU only: not a measurement.
    "smoke": dict(overrides=dict(vocabulary_size=512, num_layers=2, num_heads=2, hidden_dim=64,
                                 intermediate_dim=256, max_sequence_length=256),
                  batch_size=2, seq_len=64, warmup=2, steps=3,
                  prompt_length=8, new_tokens=16, generate_batches=(1, 2), generate_repeats=1),
}
TRAIN_DTYPE = "mixed_bfloat16"
GENERATE_DTYPE = "bfloat16"
LEARNING_RATE = 3e-4
WEIGHT_DECAY = 0.1
SEED = 1337
PEAK_TFLOPS = 989.0  # H100 SXM dense bf16 (an H200 has the same compute)
TOTAL_BUDGET_S = {"gpu": 450, "smoke": 240}  # the whole suite; gpu_suite.sh passes what is left
MIN_START_S = 20  # a variant is not started with less than this left
WORKER_DONE = "WORKER DONE"  # a worker's last line: killed after it (at exit), its rows are complete
TARGETS = [  # (label, variant names whose best tokens/s counts, tokens/s)
    ("kerasllm training, jax, >= 480K tokens/s (one H100)", ("train-kerasllm-jax",), 480e3),
    ("kerasllm training, torch, >= 200K tokens/s (one H100)",
     ("train-kerasllm-torch", "train-kerasllm-torch-compiled"), 200e3),
]
PEERS = [  # measured earlier on one H100, same shape and dtype (/work/shared/FACTS.md)
    ("nanoGPT, torch.compile", "461K", "40%"),
    ("KerasHub GPT2CausalLM, Keras-jax", "303K", ""),
    ("KerasHub GPT2CausalLM, Keras-torch", "55K", ""),
]


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    task: str  # "train" or "generate"
    backend: str
    model: str  # "kerasllm" or "keras_hub"
    jit_compile: object = "auto"
    timeout_s: int = 150
    in_smoke: bool = True  # run by --smoke too


# In the order they run: a variant that does not fit in the budget is skipped, so the ones that
# matter most come first, and the one most likely to hang or compile for minutes comes late.
VARIANTS = [
    Variant("train-kerasllm-jax", "train", "jax", "kerasllm", timeout_s=180),
    Variant("train-kerasllm-torch", "train", "torch", "kerasllm", jit_compile=False, timeout_s=120),
    Variant("train-keras_hub-jax", "train", "jax", "keras_hub", timeout_s=150),
    Variant("train-keras_hub-torch", "train", "torch", "keras_hub", jit_compile=False, timeout_s=120),
    Variant("generate-kerasllm-jax", "generate", "jax", "kerasllm", timeout_s=120),
    Variant("generate-kerasllm-torch", "generate", "torch", "kerasllm", timeout_s=120),
    # Not in --smoke: torch.compile of the train step did not finish in 127 s on a 2-core CPU.
    Variant("train-kerasllm-torch-compiled", "train", "torch", "kerasllm", jit_compile=True, timeout_s=180,
            in_smoke=False),
    Variant("generate-keras_hub-jax", "generate", "jax", "keras_hub", timeout_s=90),
    Variant("generate-keras_hub-torch", "generate", "torch", "keras_hub", timeout_s=90),
]
# ----------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shape, CPU only, a handful of steps")
    p.add_argument("--out", default=os.environ.get("OUT") or "/tmp/gpu_suite")
    p.add_argument("--budget-s", type=float, default=None, help="seconds for all variants together")
    p.add_argument("--variants", default="all", help="comma-separated variant names, or 'all'")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed training steps")
    p.add_argument("--warmup", type=int, default=None, help="untimed training steps first")
    p.add_argument("--jobs", type=int, default=None,
                   help="workers at a time (default: 1 on GPU, where timings need the machine alone; 2 with --smoke)")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="multiplies every variant's timeout")
    p.add_argument("--command", default=None, help=argparse.SUPPRESS)  # the command line as typed
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # a variant name, internal
    args = p.parse_args(argv)
    args.shape = "smoke" if args.smoke else "gpu"
    shape = SHAPES[args.shape]
    for key in ("batch_size", "seq_len", "steps", "warmup"):
        if getattr(args, key) is None:
            setattr(args, key, shape[key])
    if args.jobs is None:
        args.jobs = 2 if args.smoke else 1
    if args.budget_s is None:
        args.budget_s = TOTAL_BUDGET_S[args.shape]
    return args


# ----------------------------------------------------------------------------------------------------
# Workers: each runs in a subprocess with KERAS_BACKEND already set and prints one `RESULT {json}` line
# per row.


_START = time.perf_counter()


def emit(row):
    print("RESULT " + json.dumps(row), flush=True)


def phase(text):
    """A progress line in the worker's log, with the seconds since the process started."""
    print(f"[{time.perf_counter() - _START:6.1f} s] {text}", flush=True)


def model_config(args):
    import kerasllm

    config = dict(kerasllm.models.CausalLM.presets[PRESET])
    config.update(SHAPES[args.shape]["overrides"])
    return config


def build_model(variant, args, dtype):
    """The model, its loss and the input transform (`x -> model input`) for one variant."""
    import keras

    overrides = SHAPES[args.shape]["overrides"]
    if variant.model == "kerasllm":
        import kerasllm

        model = kerasllm.models.CausalLM.from_preset(PRESET, dtype=dtype, **overrides)
        return model, kerasllm.losses.CausalLMLoss(), lambda x: x
    import keras_hub

    config = model_config(args)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=config["vocabulary_size"], num_layers=config["num_layers"], num_heads=config["num_heads"],
        hidden_dim=config["hidden_dim"], intermediate_dim=config["intermediate_dim"],
        max_sequence_length=config["max_sequence_length"], dropout=0.0, dtype=dtype,
    )
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    import numpy as np

    return model, loss, lambda x: {"token_ids": x, "padding_mask": np.ones_like(x, dtype=bool)}


def device_kind():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    import torch

    return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"


def memory_use():
    """Peak host RSS and, on a GPU, the backend's peak device allocation, in MB."""
    import resource

    import keras

    use = dict(host_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    try:
        if keras.backend.backend() == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            if "peak_bytes_in_use" in stats:
                use["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
        else:
            import torch

            if torch.cuda.is_available():
                use["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001 - memory is extra information, never a failure
        pass
    return use


def train_worker(variant, args):
    import keras
    import numpy as np

    phase(f"keras imported ({keras.backend.backend()})")
    np.random.seed(SEED)  # not keras.utils.set_random_seed: it imports TensorFlow where installed (~3 s)
    model, loss, inputs = build_model(variant, args, TRAIN_DTYPE)
    phase("model built")
    compile_kwargs = dict(
        optimizer=keras.optimizers.AdamW(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY),
        loss=loss, jit_compile=variant.jit_compile,
    )
    if variant.model == "keras_hub":
        compile_kwargs["weighted_metrics"] = []  # its "auto" adds an accuracy metric; kerasllm has none
    model.compile(**compile_kwargs)

    B, T = args.batch_size, args.seq_len
    vocabulary = model_config(args)["vocabulary_size"]
    total_steps = args.warmup + args.steps
    rng = np.random.default_rng(SEED)
    tokens = rng.integers(0, vocabulary, size=(total_steps * B, T + 1), dtype=np.int32)
    x, y = inputs(tokens[:, :-1]), tokens[:, 1:]

    ends = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:
                float(logs["loss"])  # waits for the step: JAX returns before the work is done
            ends.append(time.perf_counter())

    # KerasHub's own `fit` turns NumPy inputs into a grain or tf.data pipeline and fails with neither
    # installed (the GPU image has neither); with no preprocessor attached that pipeline changes nothing,
    # so KerasHub's model trains through Keras's `fit`, the same loop and arrays as kerasllm's.
    fit = functools.partial(keras.Model.fit, model) if variant.model == "keras_hub" else model.fit
    start = time.perf_counter()
    fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0, callbacks=[StepTimer()])
    phase(f"fit done: first step {ends[0] - start:.1f} s, then {len(ends) - 1} steps in {ends[-1] - ends[0]:.1f} s")
    times = np.diff(np.array([start] + ends))
    timed = times[args.warmup:] if len(times) > args.warmup else times[-1:]
    median = float(np.median(timed))
    config = model_config(args)
    num_params = count_params(model)
    row = dict(
        variant=variant.name, task="train", backend=variant.backend, model=variant.model,
        jit_compile=str(model.jit_compile), batch_size=B, seq_len=T, step_ms=median * 1e3,
        step_ms_p10=float(np.percentile(timed, 10)) * 1e3, step_ms_p90=float(np.percentile(timed, 90)) * 1e3,
        first_step_s=float(times[0]), tokens_per_s=B * T / median, params=num_params,
        flops_per_token=flops_per_token(num_params, config["num_layers"], config["num_heads"],
                                        config["hidden_dim"] // config["num_heads"], T),
        device=device_kind(), **memory_use(),
    )
    one_batch = (inputs(tokens[:B, :-1]), tokens[:B, 1:])
    row["flash"] = flash_in_training_step(model, one_batch)
    phase(f"flash attention in the training step: {row['flash']}")
    if variant.model == "kerasllm":
        row["flash_probe"] = flash_probe(B, T, config["num_heads"], config["hidden_dim"] // config["num_heads"])
        phase(f"flash attention probe: {row['flash_probe']}")
    emit(row)


def flash_in_training_step(model, batch):
    """Which attention kernel the training step runs, read from the step itself (see the docstring)."""
    import keras

    if keras.backend.backend() == "jax":
        return _cudnn_attention_in_xla_dump(os.environ.get("GPU_SUITE_XLA_DUMP"))
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    x, y = batch
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            model.train_on_batch(x, y)
    names = sorted({e.key for e in prof.key_averages() if "scaled_dot_product" in e.key or "flash" in e.key})
    kinds = []
    for name in names:
        for pattern, kind in (("flash_attention_for_cpu", "cpu-flash"), ("flash_attention", "flash"),
                              ("efficient_attention", "efficient"), ("cudnn_attention", "cudnn"),
                              ("attention_math", "math")):
            if pattern in name:
                if kind not in kinds:
                    kinds.append(kind)
                break
    on_cuda = torch.cuda.is_available()
    if not kinds:
        return dict(on="no", detail="no SDPA kernel seen (" + (", ".join(names) or "none") + ")")
    return dict(on="yes" if kinds == ["flash"] and on_cuda else "no",
                detail="SDPA kernels: " + ", ".join(kinds) + ("" if on_cuda else " (CPU)"))


def _cudnn_attention_in_xla_dump(directory):
    """Counts cuDNN fused-attention calls (forward, backward) in the dumped training step."""
    if not directory or not os.path.isdir(directory):
        return dict(on="unknown", detail="no XLA dump")

    def count(suffix):
        best, scanned = (0, 0), 0
        for name in os.listdir(directory):
            if name.endswith(suffix):
                scanned += 1
                with open(os.path.join(directory, name), errors="replace") as f:
                    targets = re.findall(r'custom_call_target="__cudnn\$fmha(\w*)"', f.read())
                backward = sum("Backward" in t for t in targets)
                best = max(best, (len(targets) - backward, backward), key=sum)
        return best, scanned

    (forward, backward), scanned = count("after_optimizations.txt")
    if not scanned:
        return dict(on="unknown", detail="no training step in the XLA dump")
    if forward or backward:
        return dict(on="yes", detail=f"cuDNN fused attention: {forward} forward + {backward} backward calls")
    # Not expected: XLA keeps these custom calls to the end. Said so rather than guessed.
    (forward, backward), _ = count("before_optimizations.txt")
    if forward or backward:
        return dict(on="unknown", detail=f"{forward} forward + {backward} backward cuDNN attention calls before "
                                         "XLA's optimizations, none after")
    return dict(on="no", detail="no cuDNN fused attention in the compiled step (XLA attention)")


def flash_probe(B, T, N, H):
    """The fused kernel at the model's attention shape, asked for explicitly: 'ok' or the error."""
    import keras

    enabled = keras.config.is_flash_attention_enabled()  # None: Keras decides per call (the default)
    result = {"keras.config.is_flash_attention_enabled()": "None (auto)" if enabled is None else str(enabled)}
    if keras.backend.backend() == "jax":
        try:
            q, k, v = (keras.random.normal((B, T, N, H), dtype="bfloat16", seed=i) for i in range(3))
            out = keras.ops.dot_product_attention(q, k, v, is_causal=True, flash_attention=True)
            keras.ops.convert_to_numpy(out)
            result["dot_product_attention(flash_attention=True)"] = "ok"
        except Exception as error:  # noqa: BLE001 - the error is the finding
            result["dot_product_attention(flash_attention=True)"] = short_error(error)
        return result
    import torch
    from torch.nn.attention import SDPBackend
    from torch.nn.attention import sdpa_kernel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    result["flash_sdp_enabled"] = str(torch.backends.cuda.flash_sdp_enabled())
    try:
        q, k, v = (torch.randn(B, N, T, H, dtype=torch.bfloat16, device=device, requires_grad=True)
                   for _ in range(3))
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).float().sum().backward()
        result[f"sdpa FLASH_ATTENTION forward+backward ({device})"] = "ok"
    except Exception as error:  # noqa: BLE001
        result[f"sdpa FLASH_ATTENTION forward+backward ({device})"] = short_error(error)
    return result


def generate_worker(variant, args):
    import keras
    import numpy as np

    phase(f"keras imported ({keras.backend.backend()})")
    np.random.seed(SEED)  # not keras.utils.set_random_seed: it imports TensorFlow where installed (~3 s)
    shape = SHAPES[args.shape]
    model, _, _ = build_model(variant, args, GENERATE_DTYPE)
    phase("model built")
    if variant.model == "keras_hub":
        model.compile(sampler="greedy")
    vocabulary = model_config(args)["vocabulary_size"]
    P, new = shape["prompt_length"], shape["new_tokens"]
    rng = np.random.default_rng(SEED)
    for B in shape["generate_batches"]:
        prompts = rng.integers(0, vocabulary, size=(B, P), dtype=np.int32)
        if variant.model == "kerasllm":
            def call():
                out = model.generate(prompts, max_new_tokens=new, greedy=True)
                return sum(len(row) - P for row in out)
        else:
            token_ids = np.zeros((B, P + new), dtype=np.int32)
            token_ids[:, :P] = prompts
            mask = np.zeros((B, P + new), dtype=bool)
            mask[:, :P] = True

            def call():
                out = model.generate({"token_ids": token_ids, "padding_mask": mask}, stop_token_ids=None)
                keras.ops.convert_to_numpy(out["token_ids"])
                return B * new
        start = time.perf_counter()
        call()
        first = time.perf_counter() - start
        times, counts = [], []
        for _ in range(shape["generate_repeats"]):
            start = time.perf_counter()
            counts.append(call())
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        phase(f"batch {B}: first call {first:.1f} s, then {times}")
        emit(dict(variant=variant.name, task="generate", backend=variant.backend, model=variant.model,
                  batch_size=B, prompt_length=P, new_tokens=int(np.median(counts)), first_call_s=first,
                  call_s=median, tokens_per_s=float(np.median(counts)) / median, device=device_kind(),
                  **memory_use()))


def short_error(error, limit=240):
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_worker(args):
    variant = next(v for v in VARIANTS if v.name == args.worker)
    assert os.environ.get("KERAS_BACKEND") == variant.backend, "KERAS_BACKEND must be set before keras is imported"
    import keras

    keras.config.disable_interactive_logging()
    (train_worker if variant.task == "train" else generate_worker)(variant, args)
    print(WORKER_DONE, flush=True)


# ----------------------------------------------------------------------------------------------------
# Driver


def gpu_info():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def cpu_info():
    name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def git_commit(root):
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10)
        if out.returncode == 0:
            return out.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown (no git)"


def run_variant(variant, args, timeout):
    """Runs one worker; returns its rows (an error row if it produced none) and its output for the log."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND=variant.backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    if args.smoke:
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
        env.setdefault("OMP_NUM_THREADS", "1")  # workers run side by side (--jobs) on a small CPU
    dump = None
    if variant.backend == "jax" and variant.task == "train":
        dump = tempfile.mkdtemp(prefix="gpu_suite_xla_")
        # Only the modules of the training step (Keras names it `jit_train_step`): a full dump of every
        # small eager op is hundreds of files.
        flags = f" --xla_dump_to={dump} --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*train.*"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + flags).strip()
        env["GPU_SUITE_XLA_DUMP"] = dump
    argv = [sys.executable, "-P", os.path.abspath(__file__), "--worker", variant.name, "--batch-size",
            str(args.batch_size), "--seq-len", str(args.seq_len), "--steps", str(args.steps), "--warmup",
            str(args.warmup)]
    if args.smoke:
        argv.append("--smoke")
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: a timeout kills compile workers too
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    wall = time.perf_counter() - start
    if dump:
        subprocess.run(["rm", "-rf", dump])
    text = f"\n===== {variant.name} (exit {proc.returncode}, {wall:.1f} s)\n{output}"
    rows = [json.loads(l[len("RESULT "):]) for l in output.splitlines() if l.startswith("RESULT ")]
    for row in rows:
        row["wall_s"] = wall
    if rows and (WORKER_DONE in output.splitlines() or (not timed_out and proc.returncode == 0)):
        return rows, text
    if timed_out:
        error = f"timed out after {timeout:.0f} s"
    else:
        lines = [l for l in output.strip().splitlines() if l.strip() and not l.startswith("RESULT ")]
        error = " | ".join(lines[-2:]) or f"exit code {proc.returncode}"
        if "No module named 'keras_hub'" in output:
            error = "keras_hub not installed"
    return rows + [dict(variant=variant.name, task=variant.task, backend=variant.backend, model=variant.model,
                        error=error[-400:], wall_s=wall)], text


def target_results(rows, smoke, gpu):
    results = []
    for label, names, goal in TARGETS:
        measured = [r for r in rows if r["variant"] in names and "tokens_per_s" in r and "error" not in r]
        best = max(measured, key=lambda r: r["tokens_per_s"], default=None)
        if smoke:
            verdict = "smoke run, not a measurement"
        elif not gpu:
            verdict = "no GPU: not a measurement"
        elif best is None:
            verdict = "not measured"
        else:
            verdict = "met" if best["tokens_per_s"] >= goal else "missed"
        results.append(dict(target=label, goal_tokens_per_s=goal, verdict=verdict,
                            tokens_per_s=best["tokens_per_s"] if best else None,
                            variant=best["variant"] if best else None))
    return results


def _k(tokens_per_s):
    return f"{tokens_per_s / 1e3:,.1f}K" if tokens_per_s >= 1e4 else f"{tokens_per_s:,.0f}"


def _memory(row):
    """Device peak where there is one (the GPU), else host peak RSS."""
    if row.get("device_peak_mb") is not None:
        return f"{row['device_peak_mb']:,.0f} (device)"
    return f"{row['host_peak_rss_mb']:,.0f} (host)" if row.get("host_peak_rss_mb") else "-"


def _cell(text):
    return str(text).replace("|", "/").replace("\n", " ")


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def markdown(meta, rows, targets):
    lines = [f"# GPU suite: {meta['title']}", ""]
    for key in ("date", "device", "versions", "kerasllm", "command", "shape", "training", "generation", "mfu",
                "wall"):
        lines.append(f"- {key}: {meta[key]}")
    lines += ["", "## Targets", ""] + _table(
        ["target", "measured", "variant", "result"],
        [[t["target"], _k(t["tokens_per_s"]) + " tokens/s" if t["tokens_per_s"] else "-", t["variant"] or "-",
          t["verdict"]] for t in targets])
    lines += ["", "The targets and the MFU peak are for one H100; an H200 has the same dense bf16 peak and 1.4x the "
              "memory bandwidth, so there a 'met' is slightly flattered."]

    def failed(r, width):
        return [r["variant"], r["backend"], r["model"]] + ["-"] * width + [r["error"]]

    train = []
    for r in (r for r in rows if r["task"] == "train"):
        if "error" in r:
            train.append(failed(r, 6))
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        train.append([r["variant"], r["backend"], r["model"], r["jit_compile"],
                      f"{r['flash']['on']}: {r['flash']['detail']}", f"{r['step_ms']:.1f}", f"{r['tokens_per_s']:.0f}",
                      mfu, _memory(r), f"ok (first step {r['first_step_s']:.1f} s)"])
    lines += ["", "## Training", ""] + _table(
        ["variant", "backend", "model", "jit_compile", "flash attention", "step ms", "tokens/s", "MFU", "peak MB",
         "status"], train)
    generate = []
    for r in (r for r in rows if r["task"] == "generate"):
        if "error" in r:
            generate.append(failed(r, 5))
            continue
        generate.append([r["variant"], r["backend"], r["model"], r["batch_size"], r["new_tokens"],
                         f"{r['first_call_s']:.1f}", f"{r['call_s']:.3f}", f"{r['tokens_per_s']:.0f}", "ok"])
    lines += ["", "## Generation", ""] + _table(
        ["variant", "backend", "model", "batch", "new tokens", "first call s", "call s", "tokens/s", "status"],
        generate)
    probes = [r for r in rows if r.get("flash_probe")]
    if probes:
        lines += ["", "## Flash attention probes (the model's attention shape, bf16)", ""]
        for r in probes:
            lines.append(f"- {r['backend']}: " + "; ".join(f"{k}: {v}" for k, v in r["flash_probe"].items()))
    lines += ["", "## Peers (one H100, same shape, earlier runs; /work/shared/FACTS.md)", ""]
    lines += _table(["model", "tokens/s", "MFU"], [[name, tps, mfu or "-"] for name, tps, mfu in PEERS])
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    if args.worker:
        return run_worker(args)
    start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = [v.name for v in VARIANTS] if args.variants == "all" else args.variants.split(",")
    unknown = set(names) - {v.name for v in VARIANTS}
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {[v.name for v in VARIANTS]}")
    gpu = None if args.smoke else gpu_info()
    command = args.command or " ".join(shlex.quote(a) for a in ["python"] + sys.argv)
    print(f"# {command}\n# device: {gpu or cpu_info()}  budget {args.budget_s:.0f} s", flush=True)

    selected = [v for v in VARIANTS if v.name in names and (v.in_smoke or not args.smoke)]
    results, skipped, lock = {}, [], threading.Lock()

    def run(variant):
        left = args.budget_s - (time.perf_counter() - start)
        if left < MIN_START_S:
            with lock:
                skipped.append(variant.name)
                print(f"#   {variant.name:32s} skipped: {left:.0f} s left of the budget", flush=True)
            return
        rows, output = run_variant(variant, args, min(variant.timeout_s * args.timeout_scale, left))
        with lock:
            results[variant.name] = rows
            log.write(output)
            log.flush()
            for row in rows:
                status = row.get("error") or f"{row['tokens_per_s']:.0f} tokens/s"
                print(f"#   {variant.name:32s} {status}  ({row['wall_s']:.0f} s)", flush=True)

    with open(os.path.join(args.out, "gpu_suite.log"), "w") as log:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(run, selected))
    for v in selected:
        results.setdefault(v.name, [dict(variant=v.name, task=v.task, backend=v.backend, model=v.model,
                                         error="skipped: no time left in the budget")])
    rows = [row for v in selected for row in results[v.name]]
    skipped = [v.name for v in selected if v.name in skipped]

    seen = sorted({r["device"] for r in rows if r.get("device")})
    on_gpu = not args.smoke and (gpu is not None or any(d.startswith(("gpu", "cuda")) for d in seen))
    peak = PEAK_TFLOPS * 1e12 if on_gpu else None
    for row in rows:
        if row["task"] == "train" and "error" not in row:
            row["mfu"] = row["flops_per_token"] * row["tokens_per_s"] / peak if peak else None
    targets = target_results(rows, args.smoke, on_gpu)
    shape = SHAPES[args.shape]
    # Read from the file: the driver imports no Keras (its backend is each worker's choice).
    presets = runpy.run_path(os.path.join(root, "kerasllm", "models", "presets.py"))["CAUSAL_LM_PRESETS"]
    config = {**presets[PRESET], **shape["overrides"]}
    device = gpu or ("GPU (no nvidia-smi)" if on_gpu else f"CPU ({cpu_info()})")
    meta = dict(
        title="smoke run (CPU, tiny shape): not a measurement" if args.smoke
        else "GPT-2 124M training and generation throughput",
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        device=device + (f"; workers saw: {', '.join(seen)}" if seen else "")
        + (" (WARNING: some workers ran on the CPU)" if on_gpu and any(d.startswith("cpu") for d in seen) else ""),
        versions=", ".join(f"{k} {v}" for k, v in versions().items()) + f", python {platform.python_version()}",
        kerasllm=git_commit(root),
        command=command,
        shape=(f"preset {PRESET!r}" + (f" with {shape['overrides']}" if shape["overrides"] else "")
               + f": L{config['num_layers']} H{config['num_heads']} C{config['hidden_dim']} "
               f"F{config['intermediate_dim']} V{config['vocabulary_size']}"),
        training=(f"B{args.batch_size} x T{args.seq_len}, {TRAIN_DTYPE}, AdamW lr {LEARNING_RATE} wd {WEIGHT_DECAY}, "
                  f"model.fit, {args.warmup} warmup + {args.steps} timed steps, median"),
        generation=(f"greedy, prompt {shape['prompt_length']} + {shape['new_tokens']} new tokens, batches "
                    f"{list(shape['generate_batches'])}, {GENERATE_DTYPE}, median of {shape['generate_repeats']} "
                    "calls after a first (compiling) call"),
        mfu=(f"flops/token = 6N + 12 L H Q T over {PEAK_TFLOPS:.0f} TFLOP/s (H100 dense bf16)" if peak
             else "not computed (no GPU)"),
        wall=f"{time.perf_counter() - start:.0f} s for all variants",
    )
    text = markdown(meta, rows, targets)
    with open(os.path.join(args.out, "gpu_suite.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "gpu_suite.json"), "w") as f:
        json.dump(dict(meta, settings={k: v for k, v in vars(args).items() if k != "worker"}, rows=rows,
                       targets=targets, skipped=skipped, variants=[dataclasses.asdict(v) for v in selected]),
                  f, indent=2)
    print("\n" + text, flush=True)
    failed = [r["variant"] for r in rows if "error" in r]
    if args.smoke and failed:
        print(f"smoke run: failed or skipped: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
