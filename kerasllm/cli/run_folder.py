"""Where a training run keeps its files, and how the other commands find them again.

A command's `--model` (`--teacher`, `--init`) is one of three things: a run folder of `kerasllm train`
(model.keras, tokenizer/, run.json), a `.keras` file (its tokenizer/ beside it), or a Hugging Face model
directory (config.json, *.safetensors and usually tokenizer.json). A Hugging Face directory has no run
settings, so `PRETRAINED_SETTINGS` stands in for them; it is someone's checkpoint, so no command writes
into it.
"""

import json
import os

MODEL_FILE = "model.keras"
TOKENIZER_DIR = "tokenizer"
CONFIG_FILE = "run.json"
# Where commands that write a new model put it when the input is a Hugging Face directory: runs/<its name>/.
PRETRAINED_OUTPUT = "runs"
# The run settings of a Hugging Face directory (no run.json): batches of 8 (a pretrained model's vocabulary
# makes the logits of a batch large: 8 x 128 x 128K floats are 0.5 GB), windows of min(128,
# max_sequence_length) tokens, the built-in Shakespeare corpus (no "data"), 10% of it held out, seed 0.
PRETRAINED_SETTINGS = {"batch_size": 8, "seq_len": 128, "validation_fraction": 0.1, "seed": 0}


def is_pretrained(path):
    """Whether `path` is a Hugging Face model directory (config.json) rather than a run folder (model.keras)."""
    from kerasllm.models import hugging_face

    return hugging_face.is_model_directory(path) and not os.path.exists(os.path.join(path, MODEL_FILE))


def locate(model_path, flag="--model"):
    """`(model_file, run_dir)` of a run folder or `.keras` file; `(model_path, None)` for a Hugging Face directory."""
    if is_pretrained(model_path):
        return model_path, None
    if os.path.isdir(model_path):
        run_dir, model_file = model_path, os.path.join(model_path, MODEL_FILE)
        if not os.path.exists(model_file):
            raise SystemExit(
                f"kerasllm: {flag} {model_path} holds neither {MODEL_FILE} (a run folder of `kerasllm train`) nor "
                "config.json (a Hugging Face model directory). Pass a run folder, a .keras file or a Hugging Face "
                "model directory."
            )
    else:
        run_dir, model_file = os.path.dirname(os.path.abspath(model_path)), model_path
    if not os.path.exists(model_file):
        raise SystemExit(
            f"kerasllm: no model at {model_file}. Pass {flag} a run folder made by `kerasllm train` "
            "(it holds model.keras), a .keras file or a Hugging Face model directory."
        )
    return model_file, run_dir


def resolve(model_path, tokenizer_path=None, flag="--model"):
    """Returns `(model_file, tokenizer_dir, run_config)` for a run folder, a `.keras` file or a Hugging Face
    directory (then `model_file` is the directory and `run_config` is empty)."""
    model_file, run_dir = locate(model_path, flag)
    if run_dir is None:
        if not tokenizer_path and not _has_tokenizer(model_path):
            raise SystemExit(
                f"kerasllm: {flag} {model_path} is a Hugging Face model directory without a tokenizer "
                "(no tokenizer.json); pass --tokenizer DIR, a folder holding its tokenizer.json."
            )
        tokenizer_dir = tokenizer_path or model_path
        _check_tokenizer_dir(tokenizer_dir)
        return model_file, tokenizer_dir, {}
    tokenizer_dir = tokenizer_path or os.path.join(run_dir, TOKENIZER_DIR)
    _check_tokenizer_dir(tokenizer_dir)
    config_path = os.path.join(run_dir, CONFIG_FILE)
    config = {}
    if os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
    return model_file, tokenizer_dir, config


def load(model_path, tokenizer_path=None, flag="--model", causal=True, **overrides):
    """Loads `(model, tokenizer, run_config)` (safe mode: no code is run from the file; a damaged file
    is named in the error). A Hugging Face directory's run config is `PRETRAINED_SETTINGS`.

    `overrides` (`dtype`, `remat`) change how the model is built; `causal=False` also accepts a
    Hugging Face masked language model (BERT). Errors exit with a `kerasllm: {flag} ...` message.
    """
    _, tokenizer_dir, config = resolve(model_path, tokenizer_path, flag)
    tokenizer = load_tokenizer(tokenizer_dir)
    model = load_model(model_path, flag, causal=causal, **overrides)
    if hasattr(model, "check_tokenizer"):
        try:
            model.check_tokenizer(tokenizer)
        except ValueError as error:
            raise SystemExit(
                f"kerasllm: {flag} {model_path} with the tokenizer {tokenizer_dir}: {one_line(error)}"
            ) from error
    if is_pretrained(model_path):
        config = dict(PRETRAINED_SETTINGS, seq_len=min(PRETRAINED_SETTINGS["seq_len"], model.max_sequence_length))
    return model, tokenizer, config


def load_tokenizer(tokenizer_dir):
    import kerasllm

    try:
        return kerasllm.tokenizers.load(tokenizer_dir)
    except (ValueError, OSError) as error:
        raise SystemExit(f"kerasllm: the tokenizer {tokenizer_dir}: {one_line(error)}") from error


def load_model(model_path, flag="--model", causal=True, **overrides):
    """The model of a run folder, `.keras` file or Hugging Face directory, built with `overrides`."""
    from kerasllm.utils import load_model as load_keras_file

    overrides = {key: value for key, value in overrides.items() if value is not None}
    try:
        if is_pretrained(model_path):
            return _model_class(model_path, flag, causal).from_preset(model_path, **overrides)
        model = load_keras_file(locate(model_path, flag)[0])
        config = model.get_config()
        changed = {
            key: value for key, value in overrides.items()
            if (model.dtype_policy.name if key == "dtype" else config.get(key)) != value
        }
        return _rebuilt(model, changed) if changed else model
    except (ValueError, OSError) as error:
        raise SystemExit(f"kerasllm: {flag} {model_path}: {one_line(error)}") from error


def output_file(model_path, output, default_name, flag="--model"):
    """The `.keras` file a command writes: `output`, else `default_name` next to the input model, or
    `runs/<name>/default_name` for a Hugging Face directory (never written into)."""
    model_file, _ = locate(model_path, flag)
    if output is None:
        if is_pretrained(model_path):
            output = os.path.join(PRETRAINED_OUTPUT, os.path.basename(os.path.abspath(model_path)), default_name)
        else:
            output = os.path.join(os.path.dirname(os.path.abspath(model_file)), default_name)
    check_outside(output, model_path, flag)
    if os.path.abspath(output) == os.path.abspath(model_file):
        raise SystemExit(f"kerasllm: --output {output} is the input model; choose another file name.")
    return output


def check_outside(output, model_path, flag="--model", option="--output"):
    """Refuses an `output` inside a Hugging Face model directory: it is someone's checkpoint."""
    if output is not None and is_pretrained(model_path) and is_inside(output, model_path):
        raise SystemExit(
            f"kerasllm: {option} {output} is inside the Hugging Face model directory {flag} {model_path}, which "
            f"kerasllm never writes into; choose a path outside it (e.g. {PRETRAINED_OUTPUT}/"
            f"{os.path.basename(os.path.abspath(model_path))}/...)."
        )


def prepare_output(output, tokenizer, model_path):
    """Creates `output`'s folder; for a Hugging Face input, saves the tokenizer beside it as tokenizer/
    (unless one is there), so that the written file is a run the other commands read like any other."""
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    tokenizer_dir = os.path.join(folder, TOKENIZER_DIR)
    if is_pretrained(model_path) and not os.path.exists(tokenizer_dir):
        tokenizer.save(tokenizer_dir)
        print(f"saved tokenizer: {tokenizer_dir}")


def one_line(error):
    """An exception's message on one line (some list their details one per line)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def is_inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def _has_tokenizer(directory):
    from kerasllm.tokenizers.hugging_face_files import HF_FILENAME
    from kerasllm.tokenizers.tokenizer import CONFIG_FILENAME

    return any(os.path.isfile(os.path.join(directory, name)) for name in (HF_FILENAME, CONFIG_FILENAME))


def _check_tokenizer_dir(tokenizer_dir):
    if not os.path.isdir(tokenizer_dir):
        raise SystemExit(
            f"kerasllm: no tokenizer folder at {tokenizer_dir}. Pass --tokenizer PATH (the folder saved "
            "next to the model by `kerasllm train`, or one holding a Hugging Face tokenizer.json)."
        )


def _model_class(directory, flag, causal):
    """`CausalLM`, or `MaskedLM` for a masked LM checkpoint when `causal` is False."""
    from kerasllm.models import CausalLM, MaskedLM
    from kerasllm.models.hugging_face import loading
    from kerasllm.models.hugging_face.config import read_config

    family = loading.family_of(read_config(directory), directory)
    if "causal_lm" in family.TASKS:
        return CausalLM
    if not causal:
        return MaskedLM
    raise SystemExit(
        f"kerasllm: {flag} {directory} holds a {family.NAME} model, which is not a causal language model; this "
        "command needs one (GPT-2, Llama, Mistral, Qwen2, Qwen3 or Gemma 3)."
    )


def _rebuilt(model, overrides):
    """The same model and weights built with other settings (e.g. a bfloat16 teacher, or remat)."""
    copy = type(model).from_config({**model.get_config(), **overrides})
    copy.set_weights(model.get_weights())
    return copy
