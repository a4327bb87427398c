"""Reads and writes the files of a Hugging Face tokenizer folder (`tokenizer.json` and its configs)."""

import json
import os
import re

from tokenizers import Tokenizer as HFTokenizer

HF_FILENAME = "tokenizer.json"
CONFIG_FILENAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILENAME = "special_tokens_map.json"
CHAT_TEMPLATE_FILENAME = "chat_template.jinja"
CHAT_TEMPLATE_DIRECTORY = "additional_chat_templates"
LEGACY_CHAT_TEMPLATE_FILENAME = "chat_template.json"
# What kerasllm's own tokenizers export as: the plain fast tokenizer, which runs `tokenizer.json` as written.
EXPORT_CONFIG = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
ROLES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Files that hold a tokenizer in another format than `tokenizer.json`.
_OTHER_FORMATS = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "merges.txt",
                  "vocab.txt", "tekken.json", "tiktoken.model")
# `transformers` fills a role that the config leaves out with its class's default; these are the defaults of
# the classes of the families kerasllm converts (transformers 5).
_CLASS_DEFAULTS = {
    "GPT2Tokenizer": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
    "Qwen2Tokenizer": {"eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
    "LlamaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "GemmaTokenizer": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
                       "mask_token": "<mask>"},
    "BertTokenizer": {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                      "mask_token": "[MASK]"},
}
_MODEL_TYPE_CLASSES = {
    "gpt2": "GPT2Tokenizer", "llama": "LlamaTokenizer", "qwen2": "Qwen2Tokenizer", "qwen3": "Qwen2Tokenizer",
    "gemma": "GemmaTokenizer", "gemma2": "GemmaTokenizer", "gemma3": "GemmaTokenizer",
    "gemma3_text": "GemmaTokenizer", "bert": "BertTokenizer",
}
# `transformers` writes this for "no limit".
_VERY_LARGE_INTEGER = int(1e20)
# Entries of a loaded tokenizer_config.json that describe the files it was loaded from, not the tokenizer.
_DROPPED_ENTRIES = ("added_tokens_decoder", "name_or_path", "tokenizer_file", "special_tokens_map_file",
                    "vocab_file", "merges_file")
_CONVERT_HINT = (
    "Convert it once with transformers (`pip install transformers sentencepiece`):\n"
    "    from transformers import AutoTokenizer\n"
    "    AutoTokenizer.from_pretrained({directory!r}).save_pretrained({directory!r})\n"
    "which writes `tokenizer.json` next to the other files."
)


def is_hugging_face_folder(directory):
    """Whether `directory` holds Hugging Face tokenizer files (complete or not)."""
    names = (HF_FILENAME, CONFIG_FILENAME) + _OTHER_FORMATS
    return any(os.path.isfile(os.path.join(directory, name)) for name in names)


def read_hugging_face_folder(directory):
    """Reads a Hugging Face tokenizer folder into the arguments of `HuggingFaceTokenizer`.

    Roles come from `tokenizer_config.json`, overridden by `special_tokens_map.json` when the config has no
    `added_tokens_decoder` (the rule of `transformers`), and fall back to the defaults of the `transformers`
    class for roles the files leave out. Chat templates come from `chat_template.jinja` and
    `additional_chat_templates/*.jinja`, else from the config, else from `chat_template.json`.

    Returns:
        A dict with `tokenizer` (a `tokenizers.Tokenizer`), the seven roles, `chat_template`,
        `model_max_length` and `tokenizer_config` (the config's other entries).
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, HF_FILENAME)
    if not os.path.isfile(path):
        present = [name for name in (CONFIG_FILENAME,) + _OTHER_FORMATS
                   if os.path.isfile(os.path.join(directory, name))]
        raise FileNotFoundError(
            f"{directory!r} has no `{HF_FILENAME}` (it holds {present}): kerasllm reads Hugging Face tokenizers in "
            "the `tokenizers` format only. " + _CONVERT_HINT.format(directory=directory)
        )
    backend = _read_backend(path, directory)
    config = _read_json(directory, CONFIG_FILENAME)
    if "added_tokens_decoder" not in config:
        config.update(_read_json(directory, SPECIAL_TOKENS_MAP_FILENAME))
    model_config = _read_json(directory, "config.json", strict=False)
    defaults = _CLASS_DEFAULTS.get(_transformers_class(config, model_config, path), {})
    arguments = {"tokenizer": backend}
    for role in ROLES:
        if role in config:
            arguments[role] = token_content(config.pop(role), f"`{role}` in {CONFIG_FILENAME}")
        elif role in defaults and backend.token_to_id(defaults[role]) is not None:
            arguments[role] = defaults[role]
    arguments["chat_template"] = _read_chat_templates(directory, config)
    model_max_length = config.pop("model_max_length", None)
    if isinstance(model_max_length, (int, float)) and 0 < model_max_length < _VERY_LARGE_INTEGER:
        arguments["model_max_length"] = int(model_max_length)
    arguments["tokenizer_config"] = {k: v for k, v in config.items() if k not in _DROPPED_ENTRIES}
    return arguments


def write_hugging_face_folder(directory, tokenizer, roles, chat_template=None, model_max_length=None,
                              tokenizer_config=None):
    """Writes `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json` and chat templates.

    The chat template goes into `tokenizer_config.json` (read by every `transformers` version) and into
    `chat_template.jinja` (plus `additional_chat_templates/<name>.jinja` for named templates), which
    `transformers` 5 reads first.

    Args:
        directory: str. The folder, created if needed.
        tokenizer: `tokenizers.Tokenizer`. The tokenizer pipeline.
        roles: dict. Role name (e.g. `"eos_token"`) to token string or `None`; every role is written,
            `None` as `null` so that `transformers` does not fill in its class default.
        chat_template: str or dict. A template, or templates by name. Defaults to `None`.
        model_max_length: int. The longest input the model takes. Defaults to `None` (not written).
        tokenizer_config: dict. Other `tokenizer_config.json` entries (e.g. `tokenizer_class`), written
            unchanged. Defaults to `None`.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    tokenizer.save(os.path.join(directory, HF_FILENAME))
    config = dict(tokenizer_config or {})
    config.update({role: roles.get(role) for role in ROLES})
    if model_max_length is not None:
        config["model_max_length"] = int(model_max_length)
    if isinstance(chat_template, dict):
        config["chat_template"] = [{"name": name, "template": text} for name, text in chat_template.items()]
    elif chat_template is not None:
        config["chat_template"] = chat_template
    _write_json(os.path.join(directory, CONFIG_FILENAME), config)
    _write_json(os.path.join(directory, SPECIAL_TOKENS_MAP_FILENAME),
                {role: roles[role] for role in ROLES if roles.get(role) is not None})
    _write_chat_templates(directory, chat_template)


def token_content(value, where):
    """The text of a token given as a string or as an `AddedToken` dict (`{"content": ...}`)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{where} must be a token string or a dict with a \"content\" string, but got {value!r:.200}.")


def _read_backend(path, directory):
    try:
        return HFTokenizer.from_file(path)
    except Exception as error:  # The Rust side raises a bare Exception for every parse error.
        raise ValueError(
            f"{path!r} is not a valid `tokenizer.json` ({error}). Download the model's file again, or, if the "
            "folder holds the tokenizer in another format too (`tokenizer.model`, `vocab.json`), delete it and "
            "rebuild it. " + _CONVERT_HINT.format(directory=directory)
        ) from error


def _read_json(directory, name, strict=True):
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except ValueError as error:
        if not strict:
            return {}
        raise ValueError(f"{path!r} is not valid JSON ({error}). Replace it with an intact copy.") from error
    if not isinstance(data, dict):
        if not strict:
            return {}
        raise ValueError(f"{path!r} must hold a JSON object, but holds a {type(data).__name__}.")
    return data


def _transformers_class(config, model_config, path):
    """The `transformers` tokenizer class `AutoTokenizer` picks for this folder, as far as defaults matter."""
    model_type = model_config.get("model_type")
    if model_type == "qwen2":  # transformers ignores the declared class for this model type
        return "Qwen2Tokenizer"
    name = config.get("tokenizer_class") or model_config.get("tokenizer_class")
    if isinstance(name, str):
        name = name.removesuffix("Fast")
        if name == "LlamaTokenizer":
            # A byte-level `tokenizer.json` declared as Llama's (Llama 3) loads as a plain fast tokenizer.
            with open(path, encoding="utf-8") as file:
                return None if '"ByteLevel"' in file.read() else name
        return name
    return _MODEL_TYPE_CLASSES.get(model_type)


def _read_chat_templates(directory, config):
    in_config = config.pop("chat_template", None)
    templates = {}
    path = os.path.join(directory, CHAT_TEMPLATE_FILENAME)
    if os.path.isfile(path):
        templates["default"] = _read_text(path)
    extra = os.path.join(directory, CHAT_TEMPLATE_DIRECTORY)
    if os.path.isdir(extra):
        for name in sorted(os.listdir(extra)):
            if name.endswith(".jinja"):
                templates[name.removesuffix(".jinja")] = _read_text(os.path.join(extra, name))
    if templates:
        return templates["default"] if list(templates) == ["default"] else templates
    if isinstance(in_config, (list, tuple)):
        return {entry["name"]: entry["template"] for entry in in_config}
    if in_config is not None:
        return in_config
    return _read_json(directory, LEGACY_CHAT_TEMPLATE_FILENAME).get("chat_template")


def _write_chat_templates(directory, chat_template):
    if chat_template is None:
        return
    templates = chat_template if isinstance(chat_template, dict) else {"default": chat_template}
    for name, text in templates.items():
        if name == "default":
            path = os.path.join(directory, CHAT_TEMPLATE_FILENAME)
        else:
            if not re.fullmatch(r"[\w.-]+", name) or name.startswith("."):
                raise ValueError(f"Chat template name {name!r} cannot be a file name; use letters, digits, _ - .")
            os.makedirs(os.path.join(directory, CHAT_TEMPLATE_DIRECTORY), exist_ok=True)
            path = os.path.join(directory, CHAT_TEMPLATE_DIRECTORY, f"{name}.jinja")
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)


def _read_text(path):
    with open(path, encoding="utf-8") as file:
        return file.read()


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2, sort_keys=True, ensure_ascii=False)
        file.write("\n")
