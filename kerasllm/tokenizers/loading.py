"""`kerasllm.tokenizers.load`: reads any tokenizer written by `Tokenizer.save`."""

import json
import os

from kerasllm.tokenizers.byte_pair_tokenizer import HF_FILENAME, BytePairTokenizer
from kerasllm.tokenizers.character_tokenizer import CharacterTokenizer
from kerasllm.tokenizers.tokenizer import CONFIG_FILENAME

TOKENIZER_CLASSES = {cls.__name__: cls for cls in (BytePairTokenizer, CharacterTokenizer)}


def load(directory):
    """Loads a tokenizer saved with `tokenizer.save(directory)`, whatever its class.

    A folder with only a Hugging Face `tokenizer.json` (no `kerasllm_tokenizer.json`) loads as a
    `BytePairTokenizer` whose special tokens are the tokenizer's special added tokens.

    Args:
        directory: str or path. The folder given to `save`.

    Returns:
        A `kerasllm.tokenizers.Tokenizer` of the saved class.

    Example:

    ```python
    tokenizer.save("my_tokenizer")
    tokenizer = kerasllm.tokenizers.load("my_tokenizer")
    ```
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"No tokenizer folder at {directory!r}: it does not exist or is not a folder. Save one with "
            "`tokenizer.save(directory)` first."
        )
    config_path = os.path.join(directory, CONFIG_FILENAME)
    if not os.path.isfile(config_path):
        if os.path.isfile(os.path.join(directory, HF_FILENAME)):
            return _load_bare_hugging_face(directory)
        raise FileNotFoundError(
            f"No tokenizer in {directory!r}: expected `{CONFIG_FILENAME}` (written by "
            "`tokenizer.save(directory)`) or a Hugging Face `tokenizer.json`."
        )
    try:
        with open(config_path, encoding="utf-8") as file:
            record = json.load(file)
        class_name, config = record["class_name"], record["config"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{config_path!r} is not a valid kerasllm tokenizer file ({error}). Save the tokenizer again with "
            "`tokenizer.save(directory)`."
        ) from error
    if class_name not in TOKENIZER_CLASSES:
        raise ValueError(
            f"{config_path!r} names an unknown tokenizer class {class_name!r}; known classes are "
            f"{sorted(TOKENIZER_CLASSES)}."
        )
    return TOKENIZER_CLASSES[class_name]._from_directory(directory, config)


def _load_bare_hugging_face(directory):
    from tokenizers import Tokenizer as HFTokenizer

    hf_tokenizer = HFTokenizer.from_file(os.path.join(directory, HF_FILENAME))
    added = hf_tokenizer.get_added_tokens_decoder()
    special_tokens = [added[i].content for i in sorted(added) if added[i].special]
    roles = {
        role: (token if token in special_tokens else None)
        for role, token in (("pad_token", "<|pad|>"), ("eos_token", "<|endoftext|>"), ("mask_token", "<|mask|>"))
    }
    return BytePairTokenizer(hf_tokenizer, special_tokens=special_tokens, **roles)
