"""Why is int8 generation slower than float32 on CPU? Per-projection timings, float32 vs Keras int8.

Run (from the repository root, about a minute; JAX only, since it times jitted calls):

    KERAS_BACKEND=jax python benchmarks/int8_matmul_cpu.py

For one projection of the `small` preset's feed-forward (512 -> 2048), at the row counts of greedy
decoding (1 token per step) and of a prompt or a training batch, it times, jitted, best of `REPEATS`
runs of `CALLS` calls each, microseconds per call:

    float32 matmul          x @ W in float32
    int8 x int8 matmul      the integer product alone (int32 accumulation), what int8 is meant to speed up
    Dense float32           `keras.layers.Dense`
    Dense int8 (Keras)      the same layer after `layer.quantize("int8")`: per-token input quantization,
                            the integer product and the rescaling, as generation runs it
"""

import os
import sys
import time

if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import keras  # noqa: E402
import numpy as np  # noqa: E402

IN, OUT, ROWS, CALLS, REPEATS, SEED = 512, 2048, (1, 8, 64, 512), 200, 5, 0


def microseconds(fn, *args):
    fn(*args).block_until_ready()  # compile
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(CALLS):
            out = fn(*args)
        out.block_until_ready()
        best = min(best, (time.perf_counter() - start) / CALLS)
    return best * 1e6


def main():
    if keras.backend.backend() != "jax":
        sys.exit("int8_matmul_cpu.py times jitted JAX calls: run it with KERAS_BACKEND=jax.")
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(SEED)
    weights = jnp.asarray(rng.normal(size=(IN, OUT)).astype("float32"))
    weights_int8 = jnp.asarray(rng.integers(-127, 128, size=(IN, OUT)).astype("int8"))
    float_layer, int8_layer = keras.layers.Dense(OUT), keras.layers.Dense(OUT)
    for layer in (float_layer, int8_layer):
        layer.build((None, IN))
    int8_layer.quantize("int8")

    matmul = jax.jit(lambda x, w: x @ w)
    int_matmul = jax.jit(lambda x, w: jnp.matmul(x, w, preferred_element_type=jnp.int32))
    dense_float = jax.jit(lambda x: float_layer(x))
    dense_int8 = jax.jit(lambda x: int8_layer(x))

    print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind} | Keras {keras.__version__} | "
          f"{IN} -> {OUT} | load average {os.getloadavg()[0]:.2f} | {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'rows':>5}{'float32 matmul':>16}{'int8 matmul':>13}{'Dense float32':>15}{'Dense int8':>12}"
          f"{'int8 / float':>14}")
    for rows in ROWS:
        x = jnp.asarray(rng.normal(size=(rows, IN)).astype("float32"))
        x_int8 = jnp.asarray(rng.integers(-127, 128, size=(rows, IN)).astype("int8"))
        t = [microseconds(matmul, x, weights), microseconds(int_matmul, x_int8, weights_int8),
             microseconds(dense_float, x), microseconds(dense_int8, x)]
        print(f"{rows:>5}{t[0]:>16.0f}{t[1]:>13.0f}{t[2]:>15.0f}{t[3]:>12.0f}{t[3] / t[2]:>14.2f}")


if __name__ == "__main__":
    main()
