"""Argument parsing and backend selection for the `kerasllm` command."""

import argparse
import importlib
import os
import sys

from kerasllm.backend_selection import BACKENDS, installed

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "bfloat16")


def use_backend(requested, argv):
    """Runs the command on `requested`: Keras fixes its backend at first import, which happened when
    the kerasllm package was imported, so a different backend means starting the process again."""
    if not requested:
        return
    if not installed(requested):
        raise SystemExit(
            f"kerasllm: --backend {requested} is not installed; install it with "
            f"`pip install -e \".[{requested}]\"` (or pick another of {', '.join(BACKENDS)})."
        )
    import keras

    if keras.backend.backend() != requested:
        env = dict(os.environ, KERAS_BACKEND=requested)
        os.execve(sys.executable, [sys.executable, "-m", "kerasllm", *argv], env)


# Help shared by the commands that read a trained model (--model).
MODEL_HELP = "A run folder, a .keras file or a Hugging Face model directory."
TOKENIZER_HELP = "Tokenizer folder. Default: the run's tokenizer/ (a Hugging Face directory's own tokenizer.json)."
DATA_DEFAULT = "Default: the run's corpus (Hugging Face directory: the built-in Shakespeare)."
BATCH_SIZE_HELP = "Default: the run's batch size (Hugging Face directory: 8)."
SEQ_LEN_HELP = "Default: the run's sequence length (Hugging Face directory: min(128, its max_sequence_length))."


def output_help(name):
    return (f"Output .keras file. Default: <run>/{name}; for a Hugging Face directory runs/<its name>/{name}, "
            "its tokenizer saved beside it.")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="kerasllm",
        description="Train, sample from and evaluate Transformer language models with Keras 3.",
    )
    parser.add_argument("--backend", choices=BACKENDS, help="Keras backend (sets KERAS_BACKEND).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="Train a language model (default: tiny model on Shakespeare).")
    train.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS, help="Keras backend.")
    train.add_argument("--preset", default=None,
                       help="CausalLM preset (tiny, small, gpt2-124m, tiny-llama, ...). Default: tiny. "
                            "Not with --init.")
    train.add_argument("--init", metavar="DIR",
                       help="Fine-tune a pretrained model instead of a fresh --preset: a Hugging Face model directory "
                            "(config.json, *.safetensors, tokenizer.json), a run folder or a .keras file. Its "
                            "tokenizer and architecture are used; nothing is written into it.")
    train.add_argument("--data", help="Text file or folder of .txt/.md files. Default: the built-in Shakespeare.")
    train.add_argument("--steps", type=int, default=600, help="Optimizer steps. Default: 600.")
    train.add_argument("--batch-size", type=int, default=None, help="Sequences per batch. Default: 32 (8 with --init).")
    train.add_argument("--seq-len", type=int, default=None,
                       help="Tokens per sequence. Default: 128 (with --init at most the model's max_sequence_length).")
    train.add_argument("--precision", choices=PRECISIONS, default="float32", help="Dtype policy. Default: float32.")
    train.add_argument("--remat", action="store_true",
                       help="Recompute block activations in the backward pass: less memory, ~1/3 more compute.")
    train.add_argument("--learning-rate", type=float, default=None,
                       help="Peak learning rate. Default: 2e-3 (2e-4 with --init).")
    train.add_argument("--warmup-steps", type=int, default=None, help="Warmup steps. Default: 5%% of --steps.")
    train.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay. Default: 0.1.")
    train.add_argument("--gradient-accumulation-steps", type=int, default=None, help="Micro-batches per update.")
    train.add_argument("--tokenizer", default=None, metavar="{bpe,char,DIR}",
                       help="bpe or char: train one on the corpus; or a tokenizer folder (kerasllm's or a Hugging Face "
                            "tokenizer.json) used as is. Default: bpe; with --init the checkpoint's own.")
    train.add_argument("--vocabulary-size", type=int, default=2048, help="BPE vocabulary size. Default: 2048.")
    train.add_argument("--lora-rank", type=int, default=None, metavar="N",
                       help="With --init: train rank-N LoRA adapters and freeze the pretrained weights (saved with "
                            "the adapters folded in). Default: off (every weight trains).")
    train.add_argument("--lora-targets", nargs="+", default=None, metavar="LAYER",
                       help="With --lora-rank: the layers adapted, of query, key, value, output, intermediate, gate, "
                            "lm_head. Default: query value.")
    train.add_argument("--validation-fraction", type=float, default=0.1, help="Held-out share. Default: 0.1.")
    train.add_argument("--output", default="runs", help="Folder for runs. Default: runs.")
    train.add_argument("--name", help="Run name. Default: <preset>-<date>-<time> (with --init: <its folder name>-...).")
    train.add_argument("--prompt", default="ROMEO:", help="Prompt for the sample printed at the end.")
    train.add_argument("--sample-tokens", type=int, default=120, help="Tokens in the final sample. Default: 120.")
    train.add_argument("--seed", type=int, default=0, help="Seed for data order, initialisation and sampling.")
    train.add_argument("--checkpoint-every", type=int, default=None,
                       help="Save an exact-resume checkpoint every N steps in <run>/checkpoints. Default: off.")
    train.add_argument("--resume", action="store_true",
                       help="Continue the run --output/--name from its newest checkpoint (same arguments).")
    train.add_argument("--data-parallel", action="store_true",
                       help="Replicate the model on every device and split each batch across them (JAX: "
                            "keras.distribution; TensorFlow: MirroredStrategy; torch: use torch_data_parallel "
                            "in a torchrun script).")
    train.add_argument("--model-parallel", type=int, default=None, metavar="N",
                       help="JAX: split the weights over N devices (Megatron layout), batches over the rest.")

    info = commands.add_parser("info", help="Print versions and the Keras backend in use.")
    info.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS, help="Keras backend.")

    generate = commands.add_parser("generate", help="Continue a prompt with a trained model.")
    generate.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS, help="Keras backend.")
    generate.add_argument("--model", required=True, help=MODEL_HELP)
    generate.add_argument("--tokenizer", help=TOKENIZER_HELP)
    generate.add_argument("--prompt", default="ROMEO:", help="Text to continue.")
    generate.add_argument("--max-new-tokens", type=int, default=200)
    generate.add_argument("--temperature", type=float, default=0.8)
    generate.add_argument("--top-k", type=int, default=40)
    generate.add_argument("--top-p", type=float, default=None)
    generate.add_argument("--greedy", action="store_true", help="Always pick the most likely token.")
    generate.add_argument("--seed", type=int, default=None)

    evaluate = commands.add_parser("evaluate", help="Validation loss, perplexity, token accuracy; BLEU and ROUGE.")
    evaluate.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS, help="Keras backend.")
    evaluate.add_argument("--model", required=True, help=MODEL_HELP)
    evaluate.add_argument("--tokenizer", help=TOKENIZER_HELP)
    evaluate.add_argument("--data", help="Text to evaluate on. Default: the run's own validation split (for a Hugging "
                                         "Face directory: the last 10%% of the built-in Shakespeare).")
    evaluate.add_argument("--seq-len", type=int, default=None, help=SEQ_LEN_HELP)
    evaluate.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    evaluate.add_argument("--generate", type=int, default=0, metavar="N",
                          help="Also BLEU and ROUGE of greedy continuations of N held-out windows. Default: 0 (off).")
    evaluate.add_argument("--prompt-tokens", type=int, default=None,
                          help="With --generate: prompt tokens per window. Default: half the window.")
    evaluate.add_argument("--reference-tokens", type=int, default=None,
                          help="With --generate: tokens generated and compared. Default: the rest of the window.")
    evaluate.add_argument("--output", default=None,
                          help="Write the scores (and with --generate the decoded texts) to this JSON file "
                               "(not inside a Hugging Face --model directory).")

    distill = commands.add_parser("distill", help="Train a smaller model towards a trained teacher's logits.")
    distill.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS, help="Keras backend.")
    distill.add_argument("--teacher", required=True,
                         help="The teacher: a run folder of `kerasllm train`, a .keras file or a Hugging Face model "
                              "directory.")
    distill.add_argument("--tokenizer",
                         help="Tokenizer folder. Default: the teacher run's tokenizer/ (a Hugging Face "
                              "directory's own).")
    distill.add_argument("--data",
                         help="Text file or folder. Default: the teacher run's corpus (Hugging Face teacher: the "
                              "built-in Shakespeare).")
    distill.add_argument("--preset", default=None, help="Student: a fresh CausalLM preset. Default: tiny.")
    distill.add_argument("--student-layers", type=int, default=None,
                         help="Student: N of the teacher's blocks (every k-th, DistilBERT style) instead of --preset.")
    distill.add_argument("--loss", choices=("forward_kl", "reverse_kl", "jsd", "mse"), default="forward_kl",
                         help="Distillation loss. Default: forward_kl.")
    distill.add_argument("--temperature", type=float, default=2.0, help="Softening temperature. Default: 2.0.")
    distill.add_argument("--alpha", type=float, default=0.5, help="Weight of the distillation loss. Default: 0.5.")
    distill.add_argument("--top-k", type=int, default=None, help="Distil over the teacher's top-k tokens only.")
    distill.add_argument("--steps", type=int, default=600, help="Optimizer steps of the student. Default: 600.")
    distill.add_argument("--batch-size", type=int, default=32, help="Sequences per student batch. Default: 32.")
    distill.add_argument("--seq-len", type=int, default=None,
                         help="Tokens per sequence. Default: the teacher run's (Hugging Face teacher: min(128, its "
                              "maximum)).")
    distill.add_argument("--validation-fraction", type=float, default=None,
                         help="Default: the teacher run's (Hugging Face teacher: 0.1).")
    distill.add_argument("--learning-rate", type=float, default=2e-3, help="Student peak learning rate. Default: 2e-3.")
    distill.add_argument("--warmup-steps", type=int, default=None, help="Student warmup steps. Default: 5%% of --steps.")
    distill.add_argument("--weight-decay", type=float, default=0.1, help="Student AdamW weight decay. Default: 0.1.")
    distill.add_argument("--gradient-accumulation-steps", type=int, default=None, help="Student micro-batches per update.")
    distill.add_argument("--precision", choices=PRECISIONS, default="float32", help="Student dtype policy. Default: float32.")
    distill.add_argument("--teacher-precision", choices=PRECISIONS, default=None,
                         help="Teacher dtype policy. Default: the one it was saved with.")
    distill.add_argument("--output", default="runs", help="Folder for runs. Default: runs.")
    distill.add_argument("--name", help="Run name. Default: distill-<student>-<date>-<time>.")
    distill.add_argument("--prompt", default="ROMEO:", help="Prompt for the student's sample at the end.")
    distill.add_argument("--sample-tokens", type=int, default=120, help="Tokens in the student's sample. Default: 120.")
    distill.add_argument("--seed", type=int, default=None,
                         help="Seed. Default: the teacher run's, for the same split (Hugging Face teacher: 0).")

    prune = commands.add_parser("prune", help="Fine-tune a trained model while pruning its weights to a sparsity.")
    prune.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS, help="Keras backend.")
    prune.add_argument("--model", required=True, help=MODEL_HELP)
    prune.add_argument("--tokenizer", help=TOKENIZER_HELP)
    prune.add_argument("--data", help="Text to fine-tune on. " + DATA_DEFAULT)
    prune.add_argument("--sparsity", type=float, default=0.5, help="Share of zeros per layer. Default: 0.5.")
    prune.add_argument("--structure", choices=("unstructured", "2:4"), default="unstructured",
                       help="Unstructured or 2:4 (needs --sparsity 0.5). Default: unstructured.")
    prune.add_argument("--steps", type=int, default=200, help="Fine-tuning steps. Default: 200.")
    prune.add_argument("--frequency", type=int, default=20, help="Steps between mask updates. Default: 20.")
    prune.add_argument("--learning-rate", type=float, default=5e-4, help="Peak learning rate. Default: 5e-4.")
    prune.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    prune.add_argument("--seq-len", type=int, default=None, help=SEQ_LEN_HELP)
    prune.add_argument("--output", help=output_help("model-pruned.keras"))

    quantize = commands.add_parser("quantize", help="Quantize a trained model to int8 / int4 (PTQ, GPTQ or QAT).")
    quantize.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS, help="Keras backend.")
    quantize.add_argument("--model", required=True, help=MODEL_HELP)
    quantize.add_argument("--tokenizer", help=TOKENIZER_HELP)
    quantize.add_argument("--data", help="Text for QAT / GPTQ calibration and validation. " + DATA_DEFAULT)
    quantize.add_argument("--mode", choices=("int8", "int4"), required=True, help="Weight precision.")
    quantize.add_argument("--method", choices=("ptq", "gptq", "qat"), default=None,
                          help="Post-training, GPTQ (int4) or quantization-aware fine-tuning. "
                               "Default: qat with --qat-steps, else ptq.")
    quantize.add_argument("--qat-steps", type=int, default=None, help="QAT fine-tuning steps. Default: 200.")
    quantize.add_argument("--group-size", type=int, default=128,
                          help="int4 / GPTQ input rows per scale; -1 for one per output channel. Default: 128.")
    quantize.add_argument("--calibration-samples", type=int, default=128, help="GPTQ windows. Default: 128.")
    quantize.add_argument("--learning-rate", type=float, default=5e-4, help="QAT peak learning rate. Default: 5e-4.")
    quantize.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    quantize.add_argument("--seq-len", type=int, default=None, help=SEQ_LEN_HELP)
    quantize.add_argument("--output", help=output_help("model-<mode>[-<method>].keras"))

    factorize = commands.add_parser("factorize", help="Replace projections by low-rank factors (SVD), then fine-tune.")
    factorize.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS, help="Keras backend.")
    factorize.add_argument("--model", required=True, help=MODEL_HELP)
    factorize.add_argument("--tokenizer", help=TOKENIZER_HELP)
    factorize.add_argument("--data", help="Text to fine-tune and validate on. " + DATA_DEFAULT)
    factorize.add_argument("--energy", type=float, default=0.9,
                           help="Share of squared singular values each layer keeps. Default: 0.9.")
    factorize.add_argument("--rank", type=int, default=None, help="One rank for every layer (instead of --energy).")
    factorize.add_argument("--steps", type=int, default=200,
                           help="Fine-tuning steps after factorizing (0: none). Default: 200.")
    factorize.add_argument("--learning-rate", type=float, default=5e-4, help="Peak learning rate. Default: 5e-4.")
    factorize.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    factorize.add_argument("--seq-len", type=int, default=None, help=SEQ_LEN_HELP)
    factorize.add_argument("--output", help=output_help("model-lowrank.keras"))

    export = commands.add_parser(
        "export", help="Write a model and its tokenizer in another format (a transformers checkpoint).")
    export.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS, help="Keras backend.")
    export.add_argument("--model", required=True, help=MODEL_HELP)
    export.add_argument("--tokenizer", help=TOKENIZER_HELP)
    export.add_argument("--format", choices=("transformers",), default="transformers",
                        help="transformers: a Hugging Face model directory that AutoModelForCausalLM.from_pretrained "
                             "(AutoModelForMaskedLM for BERT) and AutoTokenizer load. Default: transformers.")
    export.add_argument("--output", required=True, metavar="DIR",
                        help="The folder to write; new or empty unless --overwrite, and outside a Hugging Face --model "
                             "directory.")
    export.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                        help="Dtype of the written weights. Default: the model's variable dtype.")
    export.add_argument("--model-type", default=None,
                        help="The Hugging Face family to write (llama, mistral, qwen2, qwen3, gemma3_text, gpt2, "
                             "bert). Default: the one whose options the model uses (GPT-2 style presets: gpt2; "
                             "Llama style: llama; a loaded checkpoint: its own).")
    export.add_argument("--max-shard-size", default="5GB",
                        help="Split larger checkpoints into shards of this size (e.g. 2GB, 500MB). Default: 5GB.")
    export.add_argument("--overwrite", action="store_true", help="Replace the contents of an existing --output folder.")

    tune = commands.add_parser("tune", help="Search learning rate, warmup, batch size and width (KerasTuner).")
    tune.add_argument("--backend", choices=BACKENDS, default=argparse.SUPPRESS, help="Keras backend.")
    tune.add_argument("--preset", default="tiny", help="CausalLM preset the trials start from. Default: tiny.")
    tune.add_argument("--data", help="Text file or folder of .txt/.md files. Default: the built-in Shakespeare.")
    tune.add_argument("--algorithm", choices=("random", "bayesian", "hyperband"), default="random",
                      help="Search algorithm. Default: random.")
    tune.add_argument("--max-trials", type=int, default=10, help="Trials (random, bayesian). Default: 10.")
    tune.add_argument("--steps", type=int, default=100, help="Optimizer steps per trial. Default: 100.")
    tune.add_argument("--learning-rate-range", type=float, nargs="+", default=[1e-4, 3e-3], metavar="LR",
                      help="MIN MAX (searched log-uniformly), or one fixed value. Default: 1e-4 3e-3.")
    tune.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32], metavar="N",
                      help="Batch sizes to choose from (one value: fixed). Default: 8 16 32.")
    tune.add_argument("--warmup-steps", type=int, nargs="+", default=[0, 20, 50], metavar="N",
                      help="Warmup steps to choose from (one value: fixed). Default: 0 20 50.")
    tune.add_argument("--widths", type=int, nargs="+", default=None, metavar="N",
                      help="Model widths (hidden_dim; feed-forward 4x) to choose from. Default: the preset's.")
    tune.add_argument("--hyperband-epochs", type=int, default=3,
                      help="Hyperband: slices of --steps a trial may train. Default: 3.")
    tune.add_argument("--seq-len", type=int, default=128, help="Tokens per sequence. Default: 128.")
    tune.add_argument("--tokenizer", choices=("bpe", "char"), default="bpe", help="Tokenizer kind. Default: bpe.")
    tune.add_argument("--vocabulary-size", type=int, default=2048, help="BPE vocabulary size. Default: 2048.")
    tune.add_argument("--validation-fraction", type=float, default=0.1, help="Held-out share. Default: 0.1.")
    tune.add_argument("--output", default="runs", help="Writes <output>/tune/results.json. Default: runs.")
    tune.add_argument("--seed", type=int, default=0, help="Seed of the search, weights and data order.")
    tune.add_argument("--verbose", action="store_true", help="Print KerasTuner's and fit's progress.")
    tune.add_argument("--run-eagerly", action="store_true",
                      help="Train trials without compiling a step (faster for trials of a few steps).")
    tune.add_argument("--no-jit-compile", action="store_true",
                      help="Compile the trials' steps without XLA (model.compile(jit_compile=False)). On "
                           "TensorFlow, XLA's compilation cache keeps ~117 MB per trial of a 27M-parameter "
                           "model; use this for long searches there.")
    return parser


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    use_backend(getattr(args, "backend", None), argv)
    if args.command == "info":
        import keras

        import kerasllm

        print(f"kerasllm {kerasllm.__version__} | Keras {keras.__version__} | backend {keras.backend.backend()}")
        return 0
    # Each command lives in kerasllm/cli/<command>.py as a function of the same name, imported only
    # when it runs (so `kerasllm info` starts fast).
    module = importlib.import_module(f"kerasllm.cli.{args.command}")
    return getattr(module, args.command)(args)


if __name__ == "__main__":
    sys.exit(main())
