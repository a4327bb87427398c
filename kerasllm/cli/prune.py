"""`kerasllm prune`: fine-tunes a trained model while magnitude pruning prunes it, then saves it."""

import math


def prune(args):
    import keras

    import kerasllm
    from kerasllm.cli import run_folder

    if args.steps <= 0:
        raise SystemExit(f"kerasllm: --steps must be a positive integer, got {args.steps}.")
    output = run_folder.output_file(args.model, args.output, "model-pruned.keras")
    model, tokenizer, config = run_folder.load(args.model, args.tokenizer)
    try:
        pruning = kerasllm.callbacks.Pruning(
            args.sparsity, structure=args.structure, frequency=args.frequency, end_step=None,
        )
    except ValueError as error:
        raise SystemExit(f"kerasllm: {error}")
    batch_size = args.batch_size or config.get("batch_size") or 32
    sequence_length = args.seq_len or config.get("seq_len") or min(128, model.max_sequence_length)
    text = kerasllm.data.load_text(args.data or config["data"]) if (args.data or config.get("data")) \
        else kerasllm.datasets.shakespeare()
    train, validation = kerasllm.data.language_modeling_splits(
        text, tokenizer, sequence_length=sequence_length, batch_size=batch_size,
        validation_fraction=config.get("validation_fraction", 0.1), seed=config.get("seed", 0),
    )
    steps_per_epoch = min(args.steps, len(train))
    epochs = math.ceil(args.steps / steps_per_epoch)
    model.compile(
        optimizer=kerasllm.optimizers.create_optimizer(args.learning_rate, total_steps=steps_per_epoch * epochs),
        loss=kerasllm.losses.CausalLMLoss(),
        metrics=[kerasllm.metrics.Perplexity()],
    )
    before = model.evaluate(validation, return_dict=True, verbose=0)
    try:
        model.fit(train, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=[pruning], verbose=2)
    except ValueError as error:
        raise SystemExit(f"kerasllm: {error}")
    after = model.evaluate(validation, return_dict=True, verbose=0)
    sparsity = kerasllm.callbacks.Pruning.sparsity(model)
    run_folder.prepare_output(output, tokenizer, args.model)
    model.save(output)
    print(f"{'model':<10}{'sparsity':>10}{'val loss':>10}{'perplexity':>12}")
    print(f"{'float':<10}{0.0:>10.3f}{before['loss']:>10.4f}{before['perplexity']:>12.2f}")
    mean = sum(sparsity.values()) / len(sparsity)
    print(f"{'pruned':<10}{mean:>10.3f}{after['loss']:>10.4f}{after['perplexity']:>12.2f}")
    print(f"saved: {output} ({steps_per_epoch * epochs} fine-tuning steps, {args.structure})")
    return 0
