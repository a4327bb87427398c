"""Generation speed of kerasllm's `CausalLM.generate` against KerasHub and transformers, on every backend.

Run (from the repository root):

    python benchmarks/generation.py --wait-load 1.3 --json /tmp/bench_generation/results.json  # all, ~15 min
    python benchmarks/generation.py --backends jax --quick                        # smoke run, ~2 min
    python benchmarks/generation.py --backends torch --models kerasllm,transformers

Shape of the issue ("Speed: compiled generation"): the `tiny` preset, GPT-2 style (4 layers, 4 heads,
width 128, feed-forward 512, vocabulary 2048, context 256), random weights, a 16-token prompt of random
ids and 128 new tokens, greedy unless a row says otherwise. Each (model, backend, thread count) runs in
its own subprocess (KERAS_BACKEND is fixed when Keras is imported). In every process a row's first call
is timed on its own (`first s`: tracing and compilation included), then `REPEATS` more calls; `best s`
is the fastest of those and tokens/s = batch * 128 / best s (every row's new tokens). Each call ends
with the ids on the host (NumPy), so asynchronous dispatch is included.

Rows:
- kerasllm `generate` with `sampler="device"` (prefill and the whole decode loop compiled) at batch 1,
  8 and 32; top-k sampling (`top_k=40, temperature=0.8`) at batch 1; `sampler="host"` (one model call
  per token from Python, the old path) at batch 1. Greedy device and host ids must be identical.
- quantized: `model.quantize("int8")` and `model.quantize("int4")` on copies of the same float model
  (fresh copies that never generated, see note below), batch 1 and 8, timed in rounds that alternate
  float32 / int8 / int4 in one process, so load changes hit all three alike.
- KerasHub `GPT2CausalLM` at the same shape (random init, `preprocessor=None`,
  `compile(sampler="greedy")`), token ids padded to 144 with a padding mask, `stop_token_ids=None`,
  so it fills exactly 128 new positions (checked).
- transformers `GPT2LMHeadModel` with the same config, eager torch, `generate(do_sample=False,
  max_new_tokens=128, min_new_tokens=128)` with an explicit attention mask; and, as the torch threads
  matter for small matmuls on a shared 2-core CPU, kerasllm torch and transformers again with
  `torch.set_num_threads(1)` (the `threads` column; `default` is `torch.get_num_threads()`).

Columns: `cpu/wall` is the process CPU time over the wall time of the best call (about the number of
cores it kept busy; lower than usual means it waited for the CPU), `load` the 1-minute load average
when the row ended (the script's own process counts in it). Timings on a shared machine are not
comparable: run it when `uptime` shows a 1-minute load below ~1.3; `--wait-load 1.3` waits for that
before each subprocess (the JSON keeps each job's load before it started as `load_before_job`).

Note: `generate` caches its compiled program on the model per (batch, length bucket, sampling), and
on torch and TensorFlow that program keeps the variables it was traced with, so calling `quantize`
after a `generate` of the same shape would time the float program. The quantized rows therefore use
copies quantized before their first `generate`.
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

# Running this file puts benchmarks/ first on sys.path, where compression.py would shadow the module
# `compression` that JAX imports (`from compression import zstd`).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

# ----------------------------------------------------------------------------------------------------
# Settings
PRESET = "tiny"
SHAPE = dict(vocabulary_size=2048, num_layers=4, num_heads=4, hidden_dim=128, intermediate_dim=512,
             max_sequence_length=256)
PROMPT_LENGTH = 16
NEW_TOKENS = 128
REPEATS = 3  # timed calls after the first one; the best is reported
BATCHES = (1, 8, 32)  # kerasllm greedy (device sampler), KerasHub, transformers
SAMPLING = dict(top_k=40, temperature=0.8)  # the sampling row, batch 1
HOST_BATCHES = (1,)  # the old per-token Python loop
QUANT_MODES = ("int8", "int4")
QUANT_BATCHES = (1, 8)
SEED = 0
BACKENDS = ("jax", "torch", "tensorflow")
MODELS = ("kerasllm", "quantized", "keras_hub", "transformers")
QUICK = dict(new_tokens=16, repeats=1, batches=(1,), quant_batches=(1,))
WORKER_TIMEOUT_S = 1800
WAIT_MAX_S = 1800  # --wait-load gives up after this long and runs anyway (the load is printed)
# ----------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset of jax,torch,tensorflow")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--one-thread", choices=("yes", "no"), default="yes",
                   help="also run kerasllm torch and transformers with torch.set_num_threads(1)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['new_tokens']} new tokens, batch 1 only, 1 timed call")
    p.add_argument("--wait-load", type=float, default=0.0, metavar="LOAD",
                   help="before each subprocess, wait (up to WAIT_MAX_S) until the 1-minute load is below LOAD")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "model:backend:threads", internal
    args = p.parse_args(argv)
    args.new_tokens = QUICK["new_tokens"] if args.quick else NEW_TOKENS
    args.repeats = QUICK["repeats"] if args.quick else REPEATS
    args.batches = QUICK["batches"] if args.quick else BATCHES
    args.quant_batches = QUICK["quant_batches"] if args.quick else QUANT_BATCHES
    return args


# ----------------------------------------------------------------------------------------------------
# Worker: runs in a subprocess with KERAS_BACKEND already set.


def emit(kind, **fields):
    print(f"{kind} " + json.dumps(fields), flush=True)


def timed(call):
    """(output, wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def summarize(first, calls, new_tokens):
    """A row's numbers from its first call's time and the timed calls' (wall, cpu) pairs."""
    best_wall, best_cpu = min(calls)
    return dict(first_s=first, best_s=best_wall, median_s=sorted(w for w, _ in calls)[len(calls) // 2],
                tokens_per_s=new_tokens / best_wall, cpu_per_wall=best_cpu / best_wall,
                load=list(os.getloadavg()))


def measure(call, new_tokens, repeats):
    """Times `call` once (compilation included), then `repeats` times; returns (row, last output)."""
    out, first, _ = timed(call)
    calls = []
    for _ in range(repeats):
        out, wall, cpu = timed(call)
        calls.append((wall, cpu))
    return summarize(first, calls, new_tokens), out


def prompts(batch):
    import numpy as np

    return np.random.default_rng(SEED).integers(0, SHAPE["vocabulary_size"], size=(batch, PROMPT_LENGTH),
                                                dtype=np.int32)


def set_threads(backend, threads):
    if backend == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        return torch.get_num_threads()
    return "default"


def new_token_counts(outputs):
    return sorted({len(row) - PROMPT_LENGTH for row in outputs})


def kerasllm_model():
    import keras
    import kerasllm

    keras.utils.set_random_seed(SEED)
    model = kerasllm.models.CausalLM.from_preset(PRESET, vocabulary_size=SHAPE["vocabulary_size"])
    for name, value in SHAPE.items():
        assert getattr(model, name, value) == value, f"preset {PRESET!r}: {name} is not {value}"
    return model


def run_kerasllm(args, backend, threads):
    threads = set_threads(backend, threads)
    model = kerasllm_model()
    base = dict(backend=backend, model="kerasllm", threads=threads)
    greedy_ids = {}
    for batch in args.batches:
        ids = prompts(batch)
        row, out = measure(lambda: model.generate(ids, max_new_tokens=args.new_tokens, greedy=True),
                           batch * args.new_tokens, args.repeats)
        greedy_ids[batch] = out
        emit("ROW", **base, path="device greedy", batch=batch, new_tokens=new_token_counts(out), **row)
    if args.threads:  # the 1-thread process only repeats the greedy rows
        return
    ids = prompts(1)
    row, out = measure(lambda: model.generate(ids, max_new_tokens=args.new_tokens, seed=SEED, **SAMPLING),
                       args.new_tokens, args.repeats)
    emit("ROW", **base, path="device top_k=40 T=0.8", batch=1, new_tokens=new_token_counts(out), **row)
    for batch in HOST_BATCHES:
        ids = prompts(batch)
        row, out = measure(lambda: model.generate(ids, max_new_tokens=args.new_tokens, greedy=True, sampler="host"),
                           batch * args.new_tokens, args.repeats)
        emit("ROW", **base, path="host greedy", batch=batch, new_tokens=new_token_counts(out), **row)
        if batch in greedy_ids:
            same = greedy_ids[batch] == out
            emit("CHECK", backend=backend, check=f"kerasllm greedy ids, device == host sampler, batch {batch}",
                 ok=bool(same), detail="" if same else f"device {greedy_ids[batch][0][PROMPT_LENGTH:][:12]}... "
                 f"host {out[0][PROMPT_LENGTH:][:12]}...")


def run_quantized(args, backend, threads):
    import kerasllm

    threads = set_threads(backend, threads)
    reference = kerasllm_model()
    models = {"float32": reference}
    for mode in QUANT_MODES:
        copy = kerasllm.models.CausalLM.from_config(reference.get_config())
        copy.set_weights(reference.get_weights())
        copy.quantize(mode)  # before its first generate: see the note in the module docstring
        models[mode] = copy
    for batch in args.quant_batches:
        ids = prompts(batch)
        calls = {name: (lambda m=m: m.generate(ids, max_new_tokens=args.new_tokens, greedy=True))
                 for name, m in models.items()}
        firsts, outputs, times = {}, {}, {name: [] for name in models}
        for name, call in calls.items():
            outputs[name], firsts[name], _ = timed(call)
        for _ in range(args.repeats):  # alternate, so a change of load hits every mode alike
            for name, call in calls.items():
                outputs[name], wall, cpu = timed(call)
                times[name].append((wall, cpu))
        rows = {name: summarize(firsts[name], times[name], batch * args.new_tokens) for name in models}
        for name, row in rows.items():
            same = sum(a == b for out, ref in zip(outputs[name], outputs["float32"])
                       for a, b in zip(out[PROMPT_LENGTH:], ref[PROMPT_LENGTH:]))
            emit("ROW", backend=backend, model="kerasllm", threads=threads, path=f"quantized {name}", batch=batch,
                 new_tokens=new_token_counts(outputs[name]), mode=name,
                 vs_float32=row["tokens_per_s"] / rows["float32"]["tokens_per_s"],
                 same_ids_as_float32=same / (batch * args.new_tokens), **row)
    ids = prompts(1)
    for mode in QUANT_MODES:  # the compiled program must run the quantized layers, as the host loop does
        device = models[mode].generate(ids, max_new_tokens=args.new_tokens, greedy=True)
        host = models[mode].generate(ids, max_new_tokens=args.new_tokens, greedy=True, sampler="host")
        emit("CHECK", backend=backend, check=f"kerasllm {mode} greedy ids, device == host sampler, batch 1",
             ok=bool(device == host), detail="" if device == host else f"device {device[0][PROMPT_LENGTH:][:12]}... "
             f"host {host[0][PROMPT_LENGTH:][:12]}...")


def run_keras_hub(args, backend, threads):
    import keras
    import keras_hub
    import numpy as np

    threads = set_threads(backend, threads)
    keras.utils.set_random_seed(SEED)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=SHAPE["vocabulary_size"], num_layers=SHAPE["num_layers"], num_heads=SHAPE["num_heads"],
        hidden_dim=SHAPE["hidden_dim"], intermediate_dim=SHAPE["intermediate_dim"],
        max_sequence_length=SHAPE["max_sequence_length"],
    )
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.compile(sampler="greedy")
    length = PROMPT_LENGTH + args.new_tokens
    for batch in args.batches:
        token_ids = np.zeros((batch, length), dtype=np.int32)
        token_ids[:, :PROMPT_LENGTH] = prompts(batch)
        padding_mask = np.zeros((batch, length), dtype=bool)
        padding_mask[:, :PROMPT_LENGTH] = True
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask}

        def call():
            # Without a preprocessor it fills the whole padded buffer; max_length is then ignored.
            out = model.generate(inputs, max_length=length, stop_token_ids=None)
            return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}

        row, out = measure(call, batch * args.new_tokens, args.repeats)
        filled = out["padding_mask"].sum(axis=1) - PROMPT_LENGTH
        emit("ROW", backend=backend, model="keras_hub", threads=threads, path="GPT2CausalLM greedy", batch=batch,
             new_tokens=sorted(set(filled.tolist())), **row)
        ok = bool((out["token_ids"][:, :PROMPT_LENGTH] == token_ids[:, :PROMPT_LENGTH]).all()
                  and (filled == args.new_tokens).all())
        emit("CHECK", backend=backend, check=f"KerasHub keeps the prompt and fills {args.new_tokens} new tokens, "
             f"batch {batch}", ok=ok, detail="" if ok else f"new tokens per row {sorted(set(filled.tolist()))}")


def run_transformers(args, backend, threads):
    import torch
    import transformers

    threads = set_threads("torch", threads)
    torch.manual_seed(SEED)
    config = transformers.GPT2Config(
        vocab_size=SHAPE["vocabulary_size"], n_positions=SHAPE["max_sequence_length"], n_embd=SHAPE["hidden_dim"],
        n_layer=SHAPE["num_layers"], n_head=SHAPE["num_heads"], n_inner=SHAPE["intermediate_dim"],
        bos_token_id=0, eos_token_id=0, pad_token_id=0,  # the default 50256 is outside this vocabulary
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    for batch in args.batches:
        input_ids = torch.from_numpy(prompts(batch)).long()
        attention_mask = torch.ones_like(input_ids)

        def call():
            return model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                                  max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                  pad_token_id=0).numpy()

        row, out = measure(call, batch * args.new_tokens, args.repeats)
        emit("ROW", backend="torch", model="transformers", threads=threads, path="GPT2LMHeadModel greedy",
             batch=batch, new_tokens=[out.shape[1] - PROMPT_LENGTH], attention=config._attn_implementation, **row)


def run_worker(args):
    name, backend, threads = args.worker.split(":")
    args.threads = int(threads)
    if name != "transformers":
        assert os.environ.get("KERAS_BACKEND") == backend, "KERAS_BACKEND must be set before keras is imported"
    {"kerasllm": run_kerasllm, "quantized": run_quantized, "keras_hub": run_keras_hub,
     "transformers": run_transformers}[name](args, backend, args.threads)


# ----------------------------------------------------------------------------------------------------
# Driver


def device_info():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def versions():
    from importlib import metadata

    found = {}
    for package in ("keras", "jax", "jaxlib", "torch", "tensorflow", "keras-hub", "transformers", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def jobs(args):
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(backends) - set(BACKENDS)) + sorted(set(models) - set(MODELS))
    if unknown:
        sys.exit(f"unknown backend or model: {', '.join(unknown)}")
    found = [(m, b, 0) for b in backends for m in MODELS[:3] if m in models]
    if "torch" in backends:
        found += [("transformers", "torch", 0)] if "transformers" in models else []
        if args.one_thread == "yes":
            found += [(m, "torch", 1) for m in ("kerasllm", "transformers") if m in models]
    return found


def run_job(args, name, backend, threads):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo_root + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, os.path.abspath(__file__), "--worker", f"{name}:{backend}:{threads}"]
    argv += ["--quick"] if args.quick else []
    rows, checks, error = [], [], None
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
        stdout, failed = proc.stdout, proc.returncode != 0
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    except subprocess.TimeoutExpired as timeout:
        stdout, failed = timeout.stdout or "", True
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
        tail = [f"timed out after {WORKER_TIMEOUT_S}s"]
    for line in stdout.splitlines():
        kind, _, payload = line.partition(" ")
        if kind == "ROW":
            rows.append(json.loads(payload))
        elif kind == "CHECK":
            checks.append(json.loads(payload))
    if failed:
        error = dict(backend=backend, model=name, threads=threads, error=" | ".join(tail))
    return rows, checks, error


def find(rows, **fields):
    return next((r for r in rows if all(r.get(k) == v for k, v in fields.items())), None)


def peer_ratios(row, rows):
    """kerasllm greedy device rows against KerasHub (same backend) and transformers (same torch threads)."""
    ratios = {}
    if row["model"] != "kerasllm" or row["path"] != "device greedy":
        return ratios
    hub = find(rows, model="keras_hub", backend=row["backend"], batch=row["batch"])
    if hub and row["threads"] == hub["threads"]:
        ratios["keras_hub"] = row["tokens_per_s"] / hub["tokens_per_s"]
    hf = find(rows, model="transformers", batch=row["batch"], threads=row["threads"])
    if hf and row["backend"] == "torch":
        ratios["transformers"] = row["tokens_per_s"] / hf["tokens_per_s"]
    return ratios


def print_table(rows):
    header = (f"| {'backend':10s} | {'model':12s} | {'path':22s} | {'batch':>5s} | {'threads':>7s} | {'first s':>7s} | "
              f"{'best s':>7s} | {'tokens/s':>8s} | {'cpu/wall':>8s} | {'load':>4s} | vs |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for row in rows:
        versus = ", ".join(f"{ratio:.2f}x {peer}" for peer, ratio in peer_ratios(row, rows).items())
        if "vs_float32" in row and row["mode"] != "float32":
            versus = f"{row['vs_float32']:.2f}x float32 ({100 * row['same_ids_as_float32']:.0f}% same ids)"
        print(f"| {row['backend']:10s} | {row['model']:12s} | {row['path']:22s} | {row['batch']:5d} | "
              f"{str(row['threads']):>7s} | {row['first_s']:7.2f} | {row['best_s']:7.3f} | {row['tokens_per_s']:8.0f} | "
              f"{row['cpu_per_wall']:8.2f} | {row['load'][0]:4.2f} | {versus} |")


def targets(rows):
    """(target, ratio, met) for each of the issue's targets that the rows cover."""
    found = []
    for row in rows:
        if row["model"] == "kerasllm" and row["path"] == "device greedy":
            for peer, ratio in peer_ratios(row, rows).items():
                found.append((f"{row['backend']} batch {row['batch']} threads {row['threads']}: kerasllm / {peer}",
                              ratio, ratio >= 1.0))
        if row.get("mode") in QUANT_MODES:
            found.append((f"{row['backend']} batch {row['batch']}: {row['mode']} / float32", row["vs_float32"],
                          row["vs_float32"] >= 1.0))
    return found


def main():
    args = parse_args()
    if args.worker:
        return run_worker(args)

    command = " ".join(shlex.quote(a) for a in ["python"] + sys.argv)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    device, load = device_info(), os.getloadavg()
    print(f"# {command}")
    print(f"# {started}  device: {device}  load avg at start: {load}")
    print(f"# versions: {versions()}")
    print(f"# preset {PRESET!r}: {SHAPE}; prompt {PROMPT_LENGTH} random ids, {args.new_tokens} new tokens, "
          f"first call + best of {args.repeats}", flush=True)
    rows, checks, errors = [], [], []
    for name, backend, threads in jobs(args):
        start = time.perf_counter()
        while args.wait_load and os.getloadavg()[0] >= args.wait_load and time.perf_counter() - start < WAIT_MAX_S:
            time.sleep(10)
        waited, load_before = time.perf_counter() - start, os.getloadavg()[0]
        start = time.perf_counter()
        found, found_checks, error = run_job(args, name, backend, threads)
        rows += [dict(row, load_before_job=load_before) for row in found]
        checks += found_checks
        errors += [error] if error else []
        print(f"#   {name:12s} {backend:10s} threads={threads or 'default'}: {len(found)} rows in "
              f"{time.perf_counter() - start:.0f} s, load {load_before:.2f} before (waited {waited:.0f} s), "
              f"{os.getloadavg()[0]:.2f} after"
              + (f"  ERROR: {error['error']}" if error else ""), flush=True)

    print()
    print_table(rows)
    print()
    for target, ratio, met in targets(rows):
        print(f"target {'met   ' if met else 'MISSED'} {ratio:5.2f}x  {target}" + ("  (stretch 2x met)" if ratio >= 2 else ""))
    for check in checks:
        if check["ok"]:
            print(f"check ok: {check['backend']}: {check['check']}")
        else:
            print(f"!!! CHECK FAILED: {check['backend']}: {check['check']}: {check['detail']}")
    short = [r for r in rows if r["new_tokens"] != [args.new_tokens]]
    for row in short:
        print(f"!!! {row['backend']} {row['model']} {row['path']} batch {row['batch']}: new tokens per row "
              f"{row['new_tokens']}, not {args.new_tokens}")
    for error in errors:
        print(f"!!! ERROR {error['model']} {error['backend']} threads={error['threads']}: {error['error']}")
    print(f"# load avg at end: {os.getloadavg()}")

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(command=command, date=started, device=device, load_average_start=load,
                           load_average_end=os.getloadavg(), versions=versions(),
                           settings=dict(preset=PRESET, shape=SHAPE, prompt_length=PROMPT_LENGTH,
                                         new_tokens=args.new_tokens, repeats=args.repeats, sampling=SAMPLING),
                           rows=rows, checks=checks, errors=errors,
                           targets=[dict(target=t, ratio=r, met=m) for t, r, m in targets(rows)]), f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
