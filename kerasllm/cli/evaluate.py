"""`kerasllm evaluate`: loss, perplexity and token accuracy of a trained model on held-out text."""


def evaluate(args):
    import kerasllm
    from kerasllm.cli import run_folder

    model, tokenizer, config = run_folder.load(args.model, args.tokenizer)
    batch_size = args.batch_size or config.get("batch_size") or 32
    sequence_length = args.seq_len or config.get("seq_len") or min(128, model.max_sequence_length)
    if args.data:
        text, fraction = kerasllm.data.load_text(args.data), 0.0
    else:
        # The run's own held-out split: same corpus, same fraction, same tokenizer.
        text = kerasllm.data.load_text(config["data"]) if config.get("data") else kerasllm.datasets.shakespeare()
        fraction = config.get("validation_fraction", 0.1)
    train, validation = kerasllm.data.language_modeling_splits(
        text, tokenizer, sequence_length=sequence_length, batch_size=batch_size,
        validation_fraction=fraction, shuffle=False,
    )
    data = train if fraction == 0.0 else validation
    model.compile(
        loss=kerasllm.losses.CausalLMLoss(),
        metrics=[kerasllm.metrics.Perplexity(), kerasllm.metrics.MaskedAccuracy()],
    )
    results = model.evaluate(data, return_dict=True, verbose=0)
    print(f"{'split':<12}{'tokens':>12}{'loss':>10}{'perplexity':>12}{'accuracy':>10}")
    print(
        f"{'data' if args.data else 'validation':<12}{len(data) * batch_size * sequence_length:>12,}"
        f"{results['loss']:>10.4f}{results['perplexity']:>12.2f}{results['token_accuracy']:>10.3f}"
    )
    return 0
