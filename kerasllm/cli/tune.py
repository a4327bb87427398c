"""`kerasllm tune`: search learning rate, warmup, batch size and width with KerasTuner; a table and results.json."""

import argparse
import json
import os

import keras


def tune(args):
    import kerasllm
    from kerasllm.cli.train import (
        check_positive, check_preset, load_corpus, print_versions, split_corpus, train_tokenizer)

    check_positive(args, ("steps", "max_trials", "seq_len", "vocabulary_size", "hyperband_epochs"))
    check_preset(args)
    try:
        space = kerasllm.tuning.SearchSpace(
            learning_rate=_learning_rates(args.learning_rate_range),
            warmup_steps=_choices(args.warmup_steps),
            batch_size=_choices(args.batch_sizes),
            hidden_dim=_choices(args.widths),
        )
    except ValueError as error:
        raise SystemExit(f"kerasllm: {error}") from error
    keras.utils.set_random_seed(args.seed)
    run_dir = os.path.join(args.output, "tune")
    os.makedirs(run_dir, exist_ok=True)
    print_versions()

    text = load_corpus(args.data)
    tokenizer = train_tokenizer(text, args)
    # The datasets' own batch size only fixes which validation windows form whole batches (each trial
    # re-batches the training windows): the smallest searched size keeps the most of them.
    split_args = argparse.Namespace(**vars(args))
    split_args.batch_size = min(space.values("batch_size"))
    try:
        train_data, val_data = split_corpus(text, tokenizer, split_args, f"tokenizer: {args.tokenizer}")
    except ValueError as error:
        raise SystemExit(f"kerasllm: {error}") from error
    if val_data is None:
        raise SystemExit("kerasllm: tune ranks trials by validation loss; --validation-fraction must be above 0.")

    base_config = {"preset": args.preset, "vocabulary_size": tokenizer.vocabulary_size}
    preset = kerasllm.models.CausalLM.presets.get(args.preset, {})
    if args.seq_len > preset.get("max_sequence_length", args.seq_len):
        base_config["max_sequence_length"] = args.seq_len
    print(f"search: {args.algorithm}, {', '.join(space.searched())}, {args.steps} steps per trial")
    try:
        result = kerasllm.tuning.search(
            train_data, val_data, space, base_config=base_config, algorithm=args.algorithm,
            max_trials=args.max_trials, steps=args.steps, directory=os.path.join(run_dir, "trials"),
            seed=args.seed, hyperband_epochs=args.hyperband_epochs, run_eagerly=args.run_eagerly,
            jit_compile=False if args.no_jit_compile else "auto", verbose=int(args.verbose),
        )
    except ValueError as error:
        raise SystemExit(f"kerasllm: {error}") from error

    print_table(result)
    result = {**result, "backend": keras.backend.backend(), "arguments": vars(args)}
    path = os.path.join(run_dir, "results.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"best: trial {result['best_trial_id']} | validation loss {result['best_val_loss']:.4f} | "
          f"perplexity {result['best_perplexity']:.2f} | {_describe(result['best_hyperparameters'])}")
    print(f"saved results: {path}")
    return 0


def print_table(result):
    """One row per trial: its searched values, steps, validation loss and perplexity; `*` marks the best."""
    names = result["searched"]
    header = f"{'trial':<7}" + "".join(f"{name:>15}" for name in names) + f"{'steps':>8}{'val loss':>10}{'ppl':>10}"
    print(header)
    for trial in result["trials"]:
        values = "".join(f"{_format(trial['hyperparameters'].get(name)):>15}" for name in names)
        loss = "-" if trial["val_loss"] is None else f"{trial['val_loss']:.4f}"
        ppl = "-" if trial["perplexity"] is None else f"{trial['perplexity']:.2f}"
        mark = "*" if trial["trial_id"] == result["best_trial_id"] else " "
        print(f"{trial['trial_id'] + mark:<7}{values}{trial['steps']:>8}{loss:>10}{ppl:>10}")


def _learning_rates(values):
    if values is None:
        return None
    if len(values) > 2:
        raise SystemExit(
            f"kerasllm: --learning-rate-range takes MIN MAX (or one fixed value), but got {len(values)} values."
        )
    return tuple(values) if len(values) == 2 else values[0]


def _choices(values):
    return None if values is None else list(values)


def _format(value):
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _describe(hyperparameters):
    return ", ".join(f"{name}={_format(value)}" for name, value in hyperparameters.items())
