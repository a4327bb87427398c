"""Resident memory of a process across the trials of `kerasllm.tuning.search`, with and without
`kerasllm.utils.backend_gradients.forget_custom_gradients` around each trial's `fit`.

Run (from the repository root; one path per process):

    KERAS_BACKEND=tensorflow python benchmarks/trial_memory.py --path kerasllm   # as shipped
    KERAS_BACKEND=tensorflow python benchmarks/trial_memory.py --path before     # the block replaced by a no-op

On TensorFlow every traced train step registers a custom gradient in a global registry that is never
emptied, and the registration holds the traced graph and through it the model's variables; each trial's
model then stays in memory for the rest of the search. The model here (2 blocks x 1024 wide, 27M
parameters) is large enough for that to show against the noise. On JAX and torch both paths are the same.
"""

import argparse
import contextlib
import os
import sys
import time

import numpy as np

# Python puts this folder first on sys.path; benchmarks/compression.py would shadow Python 3.14's
# `compression` package, which JAX imports when it starts.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [path for path in sys.path if os.path.abspath(path or ".") != _HERE]

CONFIG = dict(vocabulary_size=2048, num_layers=2, num_heads=8, hidden_dim=1024, intermediate_dim=4096,
              max_sequence_length=32)


def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", choices=("kerasllm", "before"), default="kerasllm")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--no-jit", action="store_true", help="Trials compile with jit_compile=False (no XLA).")
    args = parser.parse_args()

    import gc

    import keras

    import kerasllm
    from kerasllm.tuning import causal_lm_hyper_model

    if args.path == "before":
        causal_lm_hyper_model.forget_custom_gradients = contextlib.nullcontext

    readings = []

    class Reading(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            gc.collect()
            readings.append(resident_mb())

    ids = np.random.default_rng(0).integers(0, CONFIG["vocabulary_size"], 20_000)
    train = kerasllm.data.LanguageModelingDataset(ids[:16_000], 32, 4, vocabulary_size=CONFIG["vocabulary_size"])
    validation = kerasllm.data.LanguageModelingDataset(ids[16_000:16_512], 32, 4, shuffle=False,
                                                       vocabulary_size=CONFIG["vocabulary_size"])
    start = time.time()
    space = kerasllm.tuning.SearchSpace(learning_rate=(1e-4, 1e-2), warmup_steps=None, batch_size=None)
    kerasllm.tuning.search(train, validation, space, base_config=CONFIG, max_trials=args.trials, steps=2,
                           callbacks=[Reading()], jit_compile=False if args.no_jit else "auto")
    gc.collect()
    readings.append(resident_mb())
    growth = np.diff(readings[1:])  # from the start of trial 2 on: caches that fill once are behind us
    print(f"backend {keras.backend.backend()} | path {args.path} | jit_compile {not args.no_jit and 'auto'} | "
          f"{args.trials} trials in {time.time() - start:.0f} s")
    print("resident MB at the start of each trial, then after the search: " + ", ".join(f"{r:.0f}" for r in readings))
    print(f"mean growth per trial after the first: {growth.mean():.0f} MB")


if __name__ == "__main__":
    main()
