"""`kerasllm quantize`: a trained model to real int8 / int4 weights (PTQ, GPTQ or QAT), saved next to it.

The helpers below (loading a run with its data split, fine-tuning for exactly N steps, evaluating,
printing the before/after table) are shared with `kerasllm factorize`.
"""

import math
import os


def quantize(args):
    import kerasllm

    method = args.method or ("qat" if args.qat_steps is not None else "ptq")
    if method == "gptq" and args.mode != "int4":
        raise SystemExit("kerasllm: --method gptq quantizes weights to 4 bits; use --mode int4 with it.")
    if args.qat_steps is not None and method != "qat":
        raise SystemExit(f"kerasllm: --qat-steps is for --method qat (got --method {method}); drop one of them.")
    steps = args.qat_steps if args.qat_steps is not None else 200
    if method == "qat" and steps <= 0:
        raise SystemExit(f"kerasllm: --qat-steps must be a positive integer, got {steps}.")
    if args.calibration_samples <= 0:
        raise SystemExit(f"kerasllm: --calibration-samples must be a positive integer, got {args.calibration_samples}.")
    group_size = None if args.group_size == -1 else args.group_size
    suffix = args.mode if method == "ptq" else f"{args.mode}-{method}"
    run = load_run(args, f"model-{suffix}.keras")
    model, train, validation = run["model"], run["train"], run["validation"]
    before = evaluate(model, validation)
    before_size = saved_size(model)
    try:
        if method == "ptq":
            kerasllm.quantization.quantize(model, args.mode, group_size=group_size)
        elif method == "gptq":
            batches = range(min(len(train), -(-args.calibration_samples // train.batch_size)))
            calibration = [row for index in batches for row in train[index][0]]
            kerasllm.quantization.quantize(
                model, "gptq", calibration_data=calibration[:args.calibration_samples], group_size=group_size,
                num_samples=min(args.calibration_samples, len(calibration)), sequence_length=run["seq_len"],
            )
        else:
            qat = kerasllm.callbacks.QuantizationAwareTraining(args.mode, group_size=group_size)
            fine_tune(model, train, steps, args.learning_rate, [qat])
    except ValueError as error:
        raise SystemExit(f"kerasllm: {error}") from error
    after = evaluate(model, validation)
    save_for_inference(model, run["output"], run)
    detail = f"{steps} QAT steps" if method == "qat" else method.upper()
    print_table(
        [("float32", before_size, model.count_params(), before),
         (f"{args.mode} {method}", os.path.getsize(run["output"]), model.count_params(), after)],
        f"saved: {run['output']} ({detail}, group size {group_size})",
    )
    return 0


def load_run(args, default_name):
    """Loads the model, tokenizer and the run's own training / validation split (as `kerasllm prune`)."""
    import kerasllm
    from kerasllm.cli import run_folder

    output = run_folder.output_file(args.model, args.output, default_name)
    model, tokenizer, config = run_folder.load(args.model, args.tokenizer)
    model_file, _ = run_folder.locate(args.model)
    batch_size = args.batch_size or config.get("batch_size") or 32
    seq_len = args.seq_len or config.get("seq_len") or min(128, model.max_sequence_length)
    data = args.data or config.get("data")
    text = kerasllm.data.load_text(data) if data else kerasllm.datasets.shakespeare()
    train, validation = kerasllm.data.language_modeling_splits(
        text, tokenizer, sequence_length=seq_len, batch_size=batch_size,
        validation_fraction=config.get("validation_fraction", 0.1) or 0.1, seed=config.get("seed", 0),
    )
    return dict(model=model, tokenizer=tokenizer, model_file=model_file, model_path=args.model, output=output,
                train=train, validation=validation, seq_len=seq_len)


def fine_tune(model, train, steps, learning_rate, callbacks=()):
    """`fit` for exactly `steps` optimizer steps (warmup and cosine decay over them); returns them.

    More steps than `train` has batches run as whole passes, the last one cut short where the steps
    end. (Until 2026-11-24 the last pass ran to its end, so 600 steps over 398 batches ran 796.)
    """
    import keras

    import kerasllm

    class StopAfter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.done = 0

        def on_train_batch_end(self, batch, logs=None):
            self.done += 1
            if self.done >= steps:
                self.model.stop_training = True

    steps_per_epoch = min(steps, len(train))
    model.compile(
        optimizer=kerasllm.optimizers.create_optimizer(learning_rate, total_steps=steps),
        loss=kerasllm.losses.CausalLMLoss(),
        metrics=[kerasllm.metrics.Perplexity()],
    )
    stop = StopAfter()
    model.fit(train, epochs=math.ceil(steps / steps_per_epoch), steps_per_epoch=steps_per_epoch,
              callbacks=[*callbacks, stop], verbose=2)
    return stop.done


def evaluate(model, validation):
    """Validation loss and perplexity (recompiles: the model may have changed since its last compile)."""
    import kerasllm

    model.compile(loss=kerasllm.losses.CausalLMLoss(), metrics=[kerasllm.metrics.Perplexity()])
    return model.evaluate(validation, return_dict=True, verbose=0)


def save_for_inference(model, path, run=None):
    """Saves `model` to `path` without its compile state (Keras builds and saves the optimizer of a
    compiled model: its moments would outweigh int8 / int4 weights). Compile the reloaded model to
    train it further. With the `run` of `load_run`, first creates the folder and, for a Hugging Face
    input, saves its tokenizer beside the file."""
    if run is not None:
        from kerasllm.cli import run_folder

        run_folder.prepare_output(path, run["tokenizer"], run["model_path"])
    if not model.compiled:
        model.save(path)
        return os.path.getsize(path)
    optimizer = model.optimizer
    model.compiled, model.optimizer = False, None
    try:
        model.save(path)
    finally:
        model.compiled, model.optimizer = True, optimizer
    return os.path.getsize(path)


def saved_size(model):
    """Bytes of `model` saved by `save_for_inference` (the `model.keras` of `kerasllm train` also holds
    AdamW's two moments per weight, so its own size is not the float baseline)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return save_for_inference(model, os.path.join(folder, "model.keras"))


def print_table(rows, footer):
    """Rows of `(name, bytes, parameters, results)`: file sizes and validation perplexity side by side."""
    reference = rows[0][1]
    print(f"{'model':<18}{'parameters':>12}{'file MB':>10}{'x float':>9}{'val loss':>10}{'perplexity':>12}")
    for name, size, parameters, results in rows:
        print(f"{name:<18}{parameters:>12,}{size / 2**20:>10.3f}{size / reference:>9.2f}"
              f"{results['loss']:>10.4f}{results['perplexity']:>12.2f}")
    print(footer)
