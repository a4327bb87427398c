"""Training throughput of kerasllm's CausalLM against KerasHub's GPT2CausalLM and a plain PyTorch GPT.

Run (from the repository root):

    python benchmarks/train_throughput.py                      # CPU shape, every backend and peer
    python benchmarks/train_throughput.py --shape gpt2-124m --precision bfloat16 --backends jax
    python benchmarks/train_throughput.py --backends torch,torch+jit --peers pytorch --threads 1

Backends are `jax`, `torch`, `torch+jit` (torch with `jit_compile=True` whatever `--jit-compile`
says: kerasllm's traced step, see kerasllm/utils/backend_train_step.py) and `tensorflow`. Peers are
KerasHub's `GPT2CausalLM` (on each backend but `torch+jit`) and `pytorch`: nanoGPT's model (its
`model.py`, written out below: fused QKV, exact GELU, tied head, `scaled_dot_product_attention`) of the
same shape, trained eagerly with `torch.optim.AdamW` (weight decay on 2-D weights, as nanoGPT), run
once, beside the torch rows.

Each (backend, model) pair runs in its own subprocess (KERAS_BACKEND must be set before Keras is
imported) on the same shape and the same random token batches (fixed seed). The model is compiled with
`AdamW` and its loss, then trained the way Keras users train: `model.fit` over an in-memory NumPy
dataset, one epoch of `warmup + steps` batches. The PyTorch peer runs nanoGPT's loop instead (forward,
`backward`, `step`, `loss.item()`), one timed iteration per batch. A callback stamps the wall clock at the end of every
batch after forcing the loss to a Python float, which waits for the step to finish (JAX dispatches
asynchronously); a step's time is the gap between two consecutive batch ends, so it includes the data
pipeline and callback overhead that a user pays. As a check of that timing, the table also shows the
mean over the timed steps of the whole `fit` wall time (`fit ms`); the two should be close.

Reported per row: the median step time after warmup, tokens/s = B * T / median, and
MFU = flops_per_token * tokens/s / peak, with the nanoGPT / PaLM estimate

    flops_per_token = 6 * N + 12 * L * H * Q * T

where N counts all parameters except the position embedding (a tied token embedding is counted once, and
its use as the output head is inside 6N), L layers, H heads, Q head width, T sequence length.
On CPU the peak is *measured*: the best float32 (or bfloat16) NumPy/torch matmul rate on this machine at
startup, printed with the results; pass `--peak-tflops` to use another value. On GPU the default is
989 TFLOP/s (H100 SXM dense bf16).

Results (table, settings, versions, device, exact command) go to stdout and, as JSON, to `--output`.
Timings are only comparable when nothing else runs on the machine; the script prints the load average.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time

# ----------------------------------------------------------------------------------------------------
# Settings
SHAPES = {
    # Same shape as the nanoGPT / KerasHub CPU peer numbers in /work/shared/FACTS.md.
    "cpu": dict(num_layers=4, num_heads=4, hidden_dim=128, intermediate_dim=512, seq_len=64, batch_size=12,
                vocabulary_size=65),
    "gpt2-124m": dict(num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072, seq_len=1024,
                      batch_size=16, vocabulary_size=50304),
}
DEFAULT_STEPS = {"cpu": 60, "gpt2-124m": 20}
DEFAULT_WARMUP = {"cpu": 10, "gpt2-124m": 5}
LEARNING_RATE = 3e-4
WEIGHT_DECAY = 0.1
SEED = 1337
GPU_PEAK_TFLOPS = 989.0  # H100 SXM, dense bf16
BACKENDS = ("jax", "torch", "torch+jit", "tensorflow")
MODELS = ("kerasllm", "keras_hub", "pytorch")
WORKER_TIMEOUT_S = 1800
# ----------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="cpu")
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help="comma-separated subset of jax,torch,torch+jit,tensorflow (torch+jit: jit_compile=True)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 60 cpu, 20 gpt2-124m)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 cpu, 5 gpt2-124m)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="bfloat16 = Keras policy mixed_bfloat16 (float32 weights)")
    p.add_argument("--peers", default="keras_hub,pytorch",
                   help="peer models to run, comma-separated (keras_hub, pytorch), or 'none'")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak FLOP/s (in TFLOP/s) for MFU; default: measured on CPU, 989 on GPU")
    p.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                   help="model.compile(jit_compile=...): XLA on jax/tensorflow, a traced aten graph on torch")
    p.add_argument("--steps-per-execution", type=int, default=1)
    p.add_argument("--mode", choices=("fit", "train_on_batch"), default="fit",
                   help="time model.fit with a per-batch callback, or a train_on_batch loop")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads for torch/tensorflow (OMP_NUM_THREADS too); 0 = backend default. "
                        "On a shared CPU, torch with 2 threads can be 10x slower than with 1")
    p.add_argument("--output", default="/tmp/bench/results.json")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "backend:model", internal
    args = p.parse_args(argv)
    shape = SHAPES[args.shape]
    args.steps = args.steps or DEFAULT_STEPS[args.shape]
    args.warmup = DEFAULT_WARMUP[args.shape] if args.warmup is None else args.warmup
    args.batch_size = args.batch_size or shape["batch_size"]
    args.seq_len = args.seq_len or shape["seq_len"]
    return args


# ----------------------------------------------------------------------------------------------------
# Worker: runs in a subprocess with KERAS_BACKEND already set.


def flops_per_token(num_params, num_layers, num_heads, head_dim, seq_len):
    """nanoGPT / PaLM estimate: 6N for the matmuls with weights, 12*L*H*Q*T for attention scores."""
    return 6 * num_params + 12 * num_layers * num_heads * head_dim * seq_len


def count_params(model):
    """All weights except position embeddings (the nanoGPT convention), counting shared ones once."""
    seen, total = set(), 0
    for weight in model.weights:
        if id(weight) in seen or "position_embedding" in weight.path:
            continue
        seen.add(id(weight))
        total += int(__import__("numpy").prod(weight.shape))
    return total


def build_model(name, args, shape):
    import keras

    dtype = "mixed_bfloat16" if args.precision == "bfloat16" else None
    note = ""
    if name == "kerasllm":
        import kerasllm

        model = kerasllm.models.CausalLM(
            vocabulary_size=shape["vocabulary_size"], num_layers=shape["num_layers"], num_heads=shape["num_heads"],
            hidden_dim=shape["hidden_dim"], intermediate_dim=shape["intermediate_dim"],
            max_sequence_length=args.seq_len, position_embedding="learned", normalization="layernorm",
            activation="gelu", use_bias=True, tie_word_embeddings=True, dropout=0.0, dtype=dtype,
        )
        try:
            from kerasllm.losses import CausalLMLoss

            loss = CausalLMLoss()
        except ImportError as error:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            note = f"CausalLMLoss not importable ({error}); used SparseCategoricalCrossentropy"
        return model, loss, note
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=shape["vocabulary_size"], num_layers=shape["num_layers"], num_heads=shape["num_heads"],
        hidden_dim=shape["hidden_dim"], intermediate_dim=shape["intermediate_dim"],
        max_sequence_length=args.seq_len, dropout=0.0, dtype=dtype,
    )
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    return model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), note


def nanogpt(shape, seq_len):
    """nanoGPT's `GPT` (karpathy/nanoGPT model.py) at `shape`, dropout 0, biases on: plain PyTorch."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    C, H, V = shape["hidden_dim"], shape["num_heads"], shape["vocabulary_size"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.c_fc, self.mlp_proj = nn.Linear(C, shape["intermediate_dim"]), nn.Linear(shape["intermediate_dim"], C)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, Q)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(seq_len, C)
            self.h = nn.ModuleList(Block() for _ in range(shape["num_layers"]))
            self.ln_f = nn.LayerNorm(C)
            self.lm_head = nn.Linear(C, V, bias=False)
            self.lm_head.weight = self.wte.weight  # tied, as nanoGPT
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    residual = name.endswith(("c_proj.weight", "mlp_proj.weight"))  # nanoGPT's scaled init
                    std = 0.02 / (2 * shape["num_layers"]) ** 0.5 if residual else 0.02
                    nn.init.normal_(p, 0.0, std)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))  # (B, T, C)
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))  # (B, T, V)
            return F.cross_entropy(logits.view(-1, V), targets.reshape(-1))

    return GPT()


def run_pytorch_worker(args, shape):
    """nanoGPT's training loop on `nanogpt()`, eager, timed like the Keras rows (loss read each step)."""
    import contextlib

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = nanogpt(shape, args.seq_len).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=LEARNING_RATE,
                                  fused=device == "cuda")
    autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if args.precision == "bfloat16"
                else contextlib.nullcontext())
    B, T = args.batch_size, args.seq_len
    total_steps = args.warmup + args.steps
    rng = np.random.default_rng(SEED)
    tokens = torch.from_numpy(rng.integers(0, shape["vocabulary_size"], size=(total_steps * B, T + 1))).long()
    start, cpu_start = time.perf_counter(), time.process_time()
    ends, cpu_ends = [], []
    for i in range(total_steps):
        batch = tokens[i * B:(i + 1) * B].to(device)
        with autocast:
            loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # waits for the step
        ends.append(time.perf_counter())
        cpu_ends.append(time.process_time())
    times = np.diff(np.array([start] + ends))
    cpu_times = np.diff(np.array([cpu_start] + cpu_ends))
    timed = times[args.warmup:]
    num_params = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()  # tied head once
    return dict(times=times, cpu_times=cpu_times, timed=timed, fit_wall=ends[-1] - start,
                fit_ms=(ends[-1] - ends[args.warmup - 1 if args.warmup else 0]) / max(1, len(timed)) * 1e3,
                num_params=num_params, jit_compile="eager", spe=1, note="")


def run_worker(args):
    variant, name = args.worker.split(":")
    backend = variant.split("+")[0]
    assert os.environ.get("KERAS_BACKEND") == backend, "KERAS_BACKEND must be set before keras is imported"
    shape = SHAPES[args.shape]
    if name == "pytorch":
        return report(args, variant, name, shape, **run_pytorch_worker(args, shape))
    import numpy as np
    import keras

    if args.threads and backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    if args.threads and backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(SEED)
    model, loss, note = build_model(name, args, shape)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    if variant == "torch+jit":
        jit = True
    compile_kwargs = dict(
        optimizer=keras.optimizers.AdamW(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY),
        loss=loss, jit_compile=jit, steps_per_execution=args.steps_per_execution,
    )
    if name == "keras_hub":
        compile_kwargs["weighted_metrics"] = []  # its "auto" adds an accuracy metric; kerasllm has none
    model.compile(**compile_kwargs)

    B, T = args.batch_size, args.seq_len
    total_steps = args.warmup + args.steps
    rng = np.random.default_rng(SEED)
    tokens = rng.integers(0, shape["vocabulary_size"], size=(total_steps * B, T + 1), dtype=np.int32)
    x, y = tokens[:, :-1], tokens[:, 1:]
    if name == "keras_hub":
        x = {"token_ids": x, "padding_mask": np.ones_like(x, dtype=bool)}

    spe = args.steps_per_execution
    ends, cpu_ends = [], []
    if args.mode == "fit":
        class StepTimer(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if logs and "loss" in logs:
                    float(logs["loss"])  # waits for the step: JAX returns before the work is done
                ends.append(time.perf_counter())
                cpu_ends.append(time.process_time())

        start, cpu_start = time.perf_counter(), time.process_time()
        model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0, callbacks=[StepTimer()])
        fit_wall = time.perf_counter() - start
        # With steps_per_execution > 1 the callback fires once per `spe` steps.
        times = np.diff(np.array([start] + ends)) / spe
        cpu_times = np.diff(np.array([cpu_start] + cpu_ends)) / spe
        timed = times[args.warmup // spe:] if len(times) > args.warmup // spe else times[-1:]
        # Whole-fit wall time spread over the timed steps: start of the first timed step to the end.
        first_timed = args.warmup // spe
        fit_ms = (ends[-1] - ([start] + ends)[first_timed]) / max(1, (len(ends) - first_timed) * spe) * 1e3
    else:
        start, cpu_start = time.perf_counter(), time.process_time()
        for i in range(total_steps):
            xb = {k: v[i * B:(i + 1) * B] for k, v in x.items()} if isinstance(x, dict) else x[i * B:(i + 1) * B]
            model.train_on_batch(xb, y[i * B:(i + 1) * B])  # returns Python floats: synced
            ends.append(time.perf_counter())
            cpu_ends.append(time.process_time())
        times = np.diff(np.array([start] + ends))
        cpu_times = np.diff(np.array([cpu_start] + cpu_ends))
        timed = times[args.warmup:]
        fit_ms = (ends[-1] - ends[args.warmup - 1 if args.warmup else 0]) / max(1, len(timed)) * 1e3
        fit_wall = ends[-1] - start
    report(args, variant, name, shape, times=times, cpu_times=cpu_times, timed=timed, fit_wall=fit_wall,
           fit_ms=fit_ms, num_params=count_params(model), jit_compile=str(model.jit_compile), spe=spe, note=note)


def report(args, backend, name, shape, times, cpu_times, timed, fit_wall, fit_ms, num_params, jit_compile, spe, note):
    import numpy as np

    B, T = args.batch_size, args.seq_len
    median = float(np.median(timed))
    cpu_ms = float(np.median(cpu_times[len(cpu_times) - len(timed):])) * 1e3
    head_dim = shape["hidden_dim"] // shape["num_heads"]
    fpt = flops_per_token(num_params, shape["num_layers"], shape["num_heads"], head_dim, T)
    result = dict(
        backend=backend, model=name, step_ms=median * 1e3, step_ms_p10=float(np.percentile(timed, 10)) * 1e3,
        step_ms_p90=float(np.percentile(timed, 90)) * 1e3, fit_ms=fit_ms, cpu_ms=cpu_ms, first_step_s=float(times[0] * spe),
        fit_wall_s=fit_wall, tokens_per_s=B * T / median, params=num_params, flops_per_token=fpt,
        jit_compile=jit_compile, steps_per_execution=spe, note=note,
    )
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------------
# Driver


def device_info():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return "gpu", out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "cpu", f"{cpu}, {os.cpu_count()} cores"


def versions():
    from importlib import metadata

    found = {}
    for package in ("keras", "jax", "jaxlib", "torch", "tensorflow", "tensorflow-cpu", "keras-hub", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def measure_cpu_peak(precision):
    """Best observed 2048^3 matmul FLOP/s on this CPU: the larger of NumPy's and torch's (if installed).

    A measured, achievable peak (not a datasheet number); it drops when other processes share the CPU,
    which inflates MFU, so compare MFU only between runs on a quiet machine.
    """
    import numpy as np

    n, results = 2048, {}

    def best_of(matmul, a, b, repeats=5):
        best = 0.0
        for _ in range(repeats):
            t = time.perf_counter()
            matmul(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
        return best

    if precision == "float32":
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        results["numpy float32"] = best_of(np.matmul, a, a.copy())
    try:
        import torch

        dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        a = torch.randn(n, n, dtype=dtype)
        results[f"torch {precision}"] = best_of(torch.matmul, a, a.clone())
    except ImportError:
        pass
    if not results:
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        results["numpy float32"] = best_of(np.matmul, a, a.copy())
    source = max(results, key=results.get)
    detail = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in results.items())
    return results[source], f"measured: best 2048^3 matmul of 5 ({detail})"


def worker_command(args, backend, name):
    # -P: the benchmarks folder is not put on sys.path, where compression.py would shadow the
    # `compression` package that JAX imports (jax._src.compilation_cache).
    argv = [sys.executable, "-P", os.path.abspath(__file__), "--worker", f"{backend}:{name}", "--shape", args.shape,
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
            "--seq-len", str(args.seq_len), "--precision", args.precision, "--jit-compile", args.jit_compile,
            "--steps-per-execution", str(args.steps_per_execution), "--mode", args.mode,
            "--threads", str(args.threads)]
    return argv


def run_one(args, backend, name):
    env = dict(os.environ, KERAS_BACKEND=backend.split("+")[0], TF_CPP_MIN_LOG_LEVEL="3")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo_root + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run(worker_command(args, backend, name), env=env, capture_output=True, text=True,
                              timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return dict(backend=backend, model=name, error=f"timed out after {WORKER_TIMEOUT_S}s")
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    if name == "keras_hub" and any("No module named 'keras_hub'" in t for t in tail):
        return dict(backend=backend, model=name, error="keras_hub not installed: peer skipped")
    return dict(backend=backend, model=name, error=" | ".join(tail) or f"exit code {proc.returncode}")


def main():
    args = parse_args()
    if args.worker:
        return run_worker(args)

    shape = SHAPES[args.shape]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    peers = [] if args.peers in ("", "none") else [p.strip() for p in args.peers.split(",")]
    kind, device = device_info()
    if args.peak_tflops:
        peak, peak_source = args.peak_tflops * 1e12, "given with --peak-tflops"
    elif kind == "gpu":
        peak, peak_source = GPU_PEAK_TFLOPS * 1e12, "H100 dense bf16 datasheet"
    else:
        peak, peak_source = measure_cpu_peak(args.precision)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    command = " ".join(shlex.quote(a) for a in ["python"] + sys.argv)
    print(f"# {command}")
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  device: {device}  load avg: {load}")
    print(f"# versions: {versions()}")
    print(f"# shape {args.shape}: L{shape['num_layers']} H{shape['num_heads']} C{shape['hidden_dim']} "
          f"F{shape['intermediate_dim']} T{args.seq_len} B{args.batch_size} V{shape['vocabulary_size']}, "
          f"{args.precision}, AdamW lr {LEARNING_RATE}, {args.warmup} warmup + {args.steps} timed steps, "
          f"mode {args.mode}, jit_compile={args.jit_compile}, steps_per_execution={args.steps_per_execution}, "
          f"threads={args.threads or 'default'}")
    print(f"# MFU peak: {peak / 1e12:.3f} TFLOP/s ({peak_source})", flush=True)

    rows, pytorch_done = [], False
    for backend in backends:
        names = ["kerasllm"] + (["keras_hub"] if "keras_hub" in peers and "+" not in backend else [])
        if "pytorch" in peers and backend.startswith("torch") and not pytorch_done:
            names.append("pytorch")
            pytorch_done = True
        for name in names:
            row = run_one(args, backend, name)
            if "error" not in row:
                row["mfu"] = row["flops_per_token"] * row["tokens_per_s"] / peak
            rows.append(row)
            status = row.get("error") or (f"{row['step_ms']:.1f} ms/step, first step {row['first_step_s']:.1f} s, "
                                          f"jit_compile={row['jit_compile']}")
            print(f"#   {backend:10s} {name:9s} {status}", flush=True)

    pytorch = next((r for r in rows if r["model"] == "pytorch" and "error" not in r), None)
    header = (f"{'backend':10s} | {'model':9s} | {'step ms':>8s} | {'fit ms':>7s} | {'cpu ms':>7s} | {'tokens/s':>9s} | "
              f"{'MFU':>6s} | {'/ KerasHub':>10s} | / PyTorch")
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        if "error" in row:
            print(f"{row['backend']:10s} | {row['model']:9s} | {row['error']}")
            continue
        ratio = ""
        if row["model"] == "kerasllm":
            peer = next((r for r in rows if r["backend"] == row["backend"] and r["model"] == "keras_hub"
                         and "error" not in r), None)
            if peer:
                row["ratio_vs_keras_hub"] = row["tokens_per_s"] / peer["tokens_per_s"]
                ratio = f"{row['ratio_vs_keras_hub']:.2f}x"
        vs_pytorch = ""
        if pytorch and row["model"] != "pytorch":
            row["ratio_vs_pytorch"] = row["tokens_per_s"] / pytorch["tokens_per_s"]
            vs_pytorch = f"{row['ratio_vs_pytorch']:.2f}x"
        print(f"{row['backend']:10s} | {row['model']:9s} | {row['step_ms']:8.2f} | {row['fit_ms']:7.2f} | {row['cpu_ms']:7.2f} | "
              f"{row['tokens_per_s']:9.0f} | {100 * row['mfu']:5.1f}% | {ratio:>10s} | {vs_pytorch}")
    notes = sorted({r["note"] for r in rows if r.get("note")})
    for note in notes:
        print(f"note: {note}")

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(dict(command=command, date=datetime.datetime.now().isoformat(timespec="seconds"), device=device,
                       load_average=load, versions=versions(), shape=args.shape, settings=vars(args),
                       peak_flops=peak, peak_source=peak_source, rows=rows), f, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
