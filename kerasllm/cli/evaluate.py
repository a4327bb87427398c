"""`kerasllm evaluate`: loss, perplexity and token accuracy of a trained model on held-out text, and with
`--generate N` BLEU and ROUGE of its greedy continuations of N held-out windows."""

import json

import numpy as np


def evaluate(args):
    import kerasllm
    from kerasllm.cli import run_folder

    run_folder.check_outside(getattr(args, "output", None), args.model)
    model, tokenizer, config = run_folder.load(args.model, args.tokenizer)
    batch_size = args.batch_size or config.get("batch_size") or 32
    sequence_length = args.seq_len or config.get("seq_len") or min(128, model.max_sequence_length)
    generate = getattr(args, "generate", 0) or 0
    if generate:
        prompt_tokens, reference_tokens = _generation_lengths(args, sequence_length, model)
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
    split = "data" if args.data else "validation"
    tokens = len(data) * batch_size * sequence_length
    print(f"{'split':<12}{'tokens':>12}{'loss':>10}{'perplexity':>12}{'accuracy':>10}")
    print(
        f"{split:<12}{tokens:>12,}"
        f"{results['loss']:>10.4f}{results['perplexity']:>12.2f}{results['token_accuracy']:>10.3f}"
    )
    report = {"split": split, "tokens": tokens, **{k: float(v) for k, v in results.items()}}
    if generate:
        report.update(generation_scores(model, tokenizer, data, generate, prompt_tokens, reference_tokens, batch_size))
        print(f"{'generation':<12}{'windows':>9}{'prompt':>8}{'reference':>11}"
              f"{'bleu':>8}{'rouge_1':>9}{'rouge_2':>9}{'rouge_l':>9}")
        print(f"{'greedy':<12}{generate:>9}{prompt_tokens:>8}{reference_tokens:>11}"
              + "".join(f"{report[name]:>{width}.4f}" for name, width in
                        (("bleu", 8), ("rouge_1", 9), ("rouge_2", 9), ("rouge_l", 9))))
    if getattr(args, "output", None):
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, ensure_ascii=False)
        print(f"saved scores: {args.output}")
    return 0


def generation_scores(model, tokenizer, data, count, prompt_tokens, reference_tokens, batch_size):
    """BLEU and ROUGE of greedy continuations of `count` held-out windows, and the decoded texts.

    The windows are spread evenly over `data` (a `LanguageModelingDataset` in corpus order). Each gives
    its first `prompt_tokens` tokens as the prompt and the next `reference_tokens` as the reference;
    the model continues the prompt greedily by `reference_tokens` tokens (no early stop, so reference
    and continuation cover the same number of tokens). BLEU is sacrebleu's corpus BLEU with its
    defaults (13a tokenizer, exponential smoothing), in `[0, 1]`; ROUGE the mean F-measure of
    rouge-score.
    """
    import kerasllm

    windows = data.windows  # (num_windows, sequence_length + 1), in corpus order
    if count > len(windows):
        raise SystemExit(
            f"kerasllm: --generate {count} asks for more windows than the {len(windows)} held-out windows of "
            f"{windows.shape[1] - 1} tokens; use --generate {len(windows)} or fewer."
        )
    chosen = windows[np.linspace(0, len(windows) - 1, count).round().astype(int)]
    prompts = chosen[:, :prompt_tokens]
    references = chosen[:, prompt_tokens : prompt_tokens + reference_tokens]
    continuations = []
    for start in range(0, count, batch_size):
        rows = model.generate(prompts[start : start + batch_size], max_new_tokens=reference_tokens, greedy=True,
                              stop_token_ids=())
        continuations += [row[prompt_tokens:] for row in rows]
    generations = [
        {"prompt": tokenizer.decode(prompt), "reference": tokenizer.decode(reference),
         "hypothesis": tokenizer.decode(continuation)}
        for prompt, reference, continuation in zip(prompts, references, continuations)
    ]
    reference_texts = [g["reference"] for g in generations]
    hypothesis_texts = [g["hypothesis"] for g in generations]
    return {
        "bleu": kerasllm.metrics.bleu(reference_texts, hypothesis_texts, smooth=True),
        "rouge_1": kerasllm.metrics.rouge_n(reference_texts, hypothesis_texts, n=1),
        "rouge_2": kerasllm.metrics.rouge_n(reference_texts, hypothesis_texts, n=2),
        "rouge_l": kerasllm.metrics.rouge_l(reference_texts, hypothesis_texts),
        "prompt_tokens": prompt_tokens,
        "reference_tokens": reference_tokens,
        "generations": generations,
    }


def _generation_lengths(args, sequence_length, model):
    window = sequence_length + 1
    if args.generate < 0:
        raise SystemExit(f"kerasllm: --generate must be a positive number of windows, got {args.generate}.")
    prompt_tokens = args.prompt_tokens if args.prompt_tokens is not None else window // 2
    reference_tokens = args.reference_tokens if args.reference_tokens is not None else window - prompt_tokens
    if prompt_tokens < 1 or reference_tokens < 1:
        raise SystemExit(
            f"kerasllm: --prompt-tokens ({prompt_tokens}) and --reference-tokens ({reference_tokens}) must be "
            "positive."
        )
    limit = min(window, model.max_input_length)
    if prompt_tokens + reference_tokens > limit:
        raise SystemExit(
            f"kerasllm: --prompt-tokens {prompt_tokens} + --reference-tokens {reference_tokens} exceed the "
            f"{limit} tokens a held-out window gives (--seq-len {sequence_length} + 1, at most the model's "
            f"max_sequence_length {model.max_sequence_length}); lower them or raise --seq-len."
        )
    return prompt_tokens, reference_tokens
