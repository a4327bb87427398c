"""Peak memory and step time of training with and without `remat=True`, on the current backend.

Each setting runs in its own process (so peak memory is not shared): a `CausalLM` trains a few steps
with `train_on_batch` and the process reports its peak resident memory (`ru_maxrss`) and the median
step time. The difference in peak memory between the two processes is what rematerialization saves
(both hold the same weights, optimizer state and framework code). On JAX the script also prints XLA's
own scratch-memory estimate of the compiled step.

    KERAS_BACKEND=torch python benchmarks/remat_memory.py [--seq-len 512] [--batch-size 8]
"""

import os
import sys

# benchmarks/compression.py would shadow the standard library's `compression` package that JAX imports.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402


def child(args):
    import keras
    import numpy as np

    import kerasllm

    keras.utils.set_random_seed(0)
    model = kerasllm.models.CausalLM(
        vocabulary_size=args.vocabulary_size, num_layers=args.num_layers, num_heads=args.num_heads,
        hidden_dim=args.hidden_dim, intermediate_dim=4 * args.hidden_dim, max_sequence_length=args.seq_len,
        remat=args.remat,
    )
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=kerasllm.losses.CausalLMLoss())
    tokens = np.random.default_rng(0).integers(0, args.vocabulary_size, (args.batch_size, args.seq_len + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    times, loss = [], None
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = float(model.train_on_batch(x, y))
        times.append(time.perf_counter() - start)
    result = dict(remat=args.remat, loss=loss, step_ms=float(np.median(times[1:]) * 1e3),
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if keras.backend.backend() == "jax":
        result["xla_temp_mb"] = _xla_temp_mb(model, x, y)
    print("RESULT" + json.dumps(result), flush=True)


def _xla_temp_mb(model, x, y):
    import jax

    import kerasllm

    loss_fn = kerasllm.losses.CausalLMLoss()

    def loss(trainable, non_trainable):
        logits, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, logits)

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    compiled = jax.jit(jax.grad(loss)).lower(trainable, non_trainable).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--vocabulary-size", type=int, default=2048)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--remat", type=int, default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.remat is not None:
        args.remat = bool(args.remat)
        return child(args)
    backend = os.environ.get("KERAS_BACKEND", "jax")
    print(f"backend {backend} | load average {os.getloadavg()[0]:.2f} | {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{args.num_layers} layers x {args.hidden_dim}, sequence {args.seq_len}, batch {args.batch_size}")
    results = []
    for remat in (0, 1):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--remat", str(remat)],
                             capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.split("RESULT", 1)[1]))
    print("| remat | peak RSS (MB) | XLA scratch (MB) | step ms | loss after the steps |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['remat']} | {r['peak_rss_mb']:.0f} | {r.get('xla_temp_mb', float('nan')):.0f} | "
              f"{r['step_ms']:.0f} | {r['loss']:.4f} |")
    off, on = results
    print(f"remat: peak RSS {on['peak_rss_mb'] - off['peak_rss_mb']:+.0f} MB, "
          f"{on['step_ms'] / off['step_ms']:.2f}x the step time")


if __name__ == "__main__":
    main()
