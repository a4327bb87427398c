"""Where a training run keeps its files, and how the other commands find them again."""

import json
import os

MODEL_FILE = "model.keras"
TOKENIZER_DIR = "tokenizer"
CONFIG_FILE = "run.json"


def resolve(model_path, tokenizer_path=None):
    """Returns `(model_file, tokenizer_dir, run_config)` for a run folder or a `.keras` file."""
    if os.path.isdir(model_path):
        run_dir, model_file = model_path, os.path.join(model_path, MODEL_FILE)
    else:
        run_dir, model_file = os.path.dirname(os.path.abspath(model_path)), model_path
    if not os.path.exists(model_file):
        raise SystemExit(
            f"kerasllm: no model at {model_file}. Pass a run folder made by `kerasllm train` "
            "(it holds model.keras) or a .keras file."
        )
    tokenizer_dir = tokenizer_path or os.path.join(run_dir, TOKENIZER_DIR)
    if not os.path.isdir(tokenizer_dir):
        raise SystemExit(
            f"kerasllm: no tokenizer folder at {tokenizer_dir}. Pass --tokenizer PATH (the folder saved "
            "next to the model by `kerasllm train`)."
        )
    config_path = os.path.join(run_dir, CONFIG_FILE)
    config = {}
    if os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
    return model_file, tokenizer_dir, config


def load(model_path, tokenizer_path=None):
    """Loads `(model, tokenizer, run_config)` (safe mode: no code is run from the file; a damaged file
    is named in the error)."""
    import kerasllm
    from kerasllm.utils import load_model

    model_file, tokenizer_dir, config = resolve(model_path, tokenizer_path)
    model = load_model(model_file)
    tokenizer = kerasllm.tokenizers.load(tokenizer_dir)
    if hasattr(model, "check_tokenizer"):
        model.check_tokenizer(tokenizer)
    return model, tokenizer, config
