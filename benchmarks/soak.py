"""Soak test: a long CPU training run with checkpoints; memory growth, checkpoint write and resume times.

Run (from the repository root):

    python benchmarks/soak.py                                # 3000 steps, checkpoint every 100
    python benchmarks/soak.py --steps 400                    # a quick check
    KERAS_BACKEND=torch python benchmarks/soak.py --steps 1000 --checkpoint-every 50

The tiny `kerasllm.models.CausalLM` (L2 H2 C16 V61 T16, dropout 0.1) trains with `model.fit` on a
`kerasllm.data.LanguageModelingDataset` of random ids (100 batches of 8 per epoch), with a
`kerasllm.callbacks.Checkpoint(every_n_steps=..., keep=3)` that also saves a `TrainingLogger`'s state.

Reported:
- resident memory (RSS): the process's peak (`ru_maxrss`) and its current RSS once the run is warm (after
  the first `--warmup-steps` steps: compilation, first checkpoint) and at the end, with the growth in
  percent. Target: no growth beyond 5% over the run (a leak per step or per checkpoint shows here).
- checkpoint write time (median and max over the run's saves: weights, optimizer, RNG, state, fsync,
  rename);
- resume time: `Checkpoint.restore` of the newest checkpoint into a freshly built model (files read and
  checked, weights, optimizer and RNG assigned), and the wall time of a resumed `fit` from its call to
  the end of its first step (restore + data positioning + step compilation).

Settings and results are printed as a short table, and as JSON to `--output` if given.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
# Python puts this script's folder first on the path; a benchmark named like a module that JAX imports
# (`compression`) would shadow it. Import from the repository root instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasllm  # noqa: E402

VOCABULARY, LENGTH, BATCH, BATCHES_PER_EPOCH = 61, 16, 8, 100


def peak_rss_mb():
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


class TimedCheckpoint(kerasllm.callbacks.Checkpoint):
    """A `Checkpoint` that records how long each save takes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.save_seconds = []

    def save(self, path, position):
        start = time.perf_counter()
        super().save(path, position)
        self.save_seconds.append(time.perf_counter() - start)


class Probe(keras.callbacks.Callback):
    """Samples memory once the run is warm and times the first step."""

    def __init__(self, warmup_steps):
        super().__init__()
        self.warmup_steps = warmup_steps
        self.step = 0
        self.warm = None
        self.first_step_end = None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.first_step_end is None:
            self.first_step_end = time.perf_counter()
        if self.step == self.warmup_steps:
            self.warm = {"peak_rss_mb": peak_rss_mb(), "rss_mb": current_rss_mb()}


def build(directory, epochs_done_hint=None):
    keras.utils.set_random_seed(0)
    ids = np.random.default_rng(0).integers(0, VOCABULARY, BATCHES_PER_EPOCH * BATCH * (LENGTH + 1) + 1)
    data = kerasllm.data.LanguageModelingDataset(ids, sequence_length=LENGTH, batch_size=BATCH, seed=0)
    model = kerasllm.models.CausalLM(vocabulary_size=VOCABULARY, num_layers=2, num_heads=2, hidden_dim=16,
                                     intermediate_dim=32, max_sequence_length=LENGTH, dropout=0.1)
    model.compile(optimizer=kerasllm.optimizers.create_optimizer(1e-3, total_steps=10**6, warmup_steps=10),
                  loss=kerasllm.losses.CausalLMLoss())
    logger = kerasllm.callbacks.TrainingLogger(os.path.join(directory, "logs"), every_n_steps=10, plot=False)
    return data, model, logger


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="Training steps (a multiple of 100). Default: 3000.")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="Steps between checkpoints. Default: 100.")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="Steps before the 'start' memory sample. Default: 10%% of --steps, at least "
                             "one checkpoint interval.")
    parser.add_argument("--directory", default=None, help="Run folder. Default: a temporary folder, deleted after.")
    parser.add_argument("--output", default=None, help="Write the results as JSON here.")
    args = parser.parse_args()
    if args.steps < BATCHES_PER_EPOCH or args.steps % BATCHES_PER_EPOCH:
        parser.error(f"--steps must be a positive multiple of {BATCHES_PER_EPOCH} (one epoch).")
    warmup = args.warmup_steps or max(args.checkpoint_every, args.steps // 10)
    if warmup >= args.steps:
        parser.error("--warmup-steps must be less than --steps.")
    keras.config.disable_interactive_logging()
    directory = args.directory or tempfile.mkdtemp(prefix="kerasllm-soak-")
    epochs = args.steps // BATCHES_PER_EPOCH

    # --- the long run ---
    data, model, logger = build(directory)
    checkpoint = TimedCheckpoint(os.path.join(directory, "checkpoints"), every_n_steps=args.checkpoint_every,
                                 keep=3, dataset=data, callbacks=[logger])
    probe = Probe(warmup)
    start = time.perf_counter()
    history = model.fit(data, epochs=epochs, shuffle=False, verbose=0, callbacks=[logger, checkpoint, probe])
    train_seconds = time.perf_counter() - start
    end = {"peak_rss_mb": peak_rss_mb(), "rss_mb": current_rss_mb()}
    latest = kerasllm.callbacks.Checkpoint.latest(checkpoint.directory)
    assert checkpoint.step == args.steps and latest["step"] == args.steps, (checkpoint.step, latest)
    steps_per_second = (args.steps - 1) / (train_seconds - (probe.first_step_end - start))
    # Measured now: the resumed run below writes newer checkpoints and `keep` deletes this one.
    checkpoint_mb = sum(os.path.getsize(os.path.join(latest["path"], f)) for f in os.listdir(latest["path"])) / 2**20

    # --- resume: restore into a fresh model, then a resumed fit for one more epoch ---
    data2, model2, logger2 = build(directory)
    restorer = kerasllm.callbacks.Checkpoint(checkpoint.directory, dataset=data2, callbacks=[logger2])
    restorer.set_model(model2)
    restore_start = time.perf_counter()
    restorer.restore(latest["path"])
    restore_seconds = time.perf_counter() - restore_start

    data3, model3, logger3 = build(directory)
    resumed = kerasllm.callbacks.Checkpoint(checkpoint.directory, every_n_steps=args.checkpoint_every, keep=3,
                                            dataset=data3, callbacks=[logger3])
    probe3 = Probe(warmup_steps=1)
    resume_start = time.perf_counter()
    model3.fit(data3, epochs=epochs + 1, shuffle=False, verbose=0, callbacks=[logger3, resumed, probe3])
    resume_to_first_step = probe3.first_step_end - resume_start
    assert resumed.restored_from == latest["path"] and resumed.step == args.steps + BATCHES_PER_EPOCH

    warm = probe.warm
    results = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "load_average": os.getloadavg(),
        "steps": args.steps,
        "checkpoint_every": args.checkpoint_every,
        "warmup_steps": warmup,
        "checkpoints_written": len(checkpoint.save_seconds),
        "steps_per_second": steps_per_second,
        "final_loss": history.history["loss"][-1],
        "peak_rss_mb_warm": warm["peak_rss_mb"],
        "peak_rss_mb_end": end["peak_rss_mb"],
        "peak_rss_growth_percent": 100 * (end["peak_rss_mb"] / warm["peak_rss_mb"] - 1),
        "rss_mb_warm": warm["rss_mb"],
        "rss_mb_end": end["rss_mb"],
        "rss_growth_percent": 100 * (end["rss_mb"] / warm["rss_mb"] - 1),
        "checkpoint_write_ms_median": 1000 * statistics.median(checkpoint.save_seconds),
        "checkpoint_write_ms_max": 1000 * max(checkpoint.save_seconds),
        "checkpoint_mb": checkpoint_mb,
        "restore_ms": 1000 * restore_seconds,
        "resumed_fit_to_first_step_s": resume_to_first_step,
    }
    print(f"kerasllm soak: backend {results['backend']}, {args.steps} steps, checkpoint every "
          f"{args.checkpoint_every} ({results['checkpoints_written']} written, keep 3), load average "
          f"{results['load_average'][0]:.1f}")
    rows = [
        ("steps/s (after the first step)", f"{steps_per_second:.1f}"),
        (f"peak RSS at step {warmup} / end (MB)", f"{warm['peak_rss_mb']:.1f} / {end['peak_rss_mb']:.1f}"),
        ("peak RSS growth (target <= 5%)", f"{results['peak_rss_growth_percent']:+.2f}%"),
        (f"current RSS at step {warmup} / end (MB)", f"{warm['rss_mb']:.1f} / {end['rss_mb']:.1f}"),
        ("current RSS growth", f"{results['rss_growth_percent']:+.2f}%"),
        ("checkpoint write, median / max (ms)",
         f"{results['checkpoint_write_ms_median']:.1f} / {results['checkpoint_write_ms_max']:.1f}"),
        ("checkpoint size (MB)", f"{results['checkpoint_mb']:.2f}"),
        ("restore into a fresh model (ms)", f"{results['restore_ms']:.1f}"),
        ("resumed fit, call to first step end (s)", f"{resume_to_first_step:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    verdict = "PASS" if results["peak_rss_growth_percent"] <= 5 else "FAIL"
    print(f"memory target (peak RSS growth <= 5%): {verdict}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    if args.directory is None:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
