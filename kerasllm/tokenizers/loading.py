"""`kerasllm.tokenizers.load`: reads any tokenizer written by `Tokenizer.save`."""

import json
import os

from kerasllm.tokenizers import hugging_face_files
from kerasllm.tokenizers.byte_pair_tokenizer import BytePairTokenizer
from kerasllm.tokenizers.character_tokenizer import CharacterTokenizer
from kerasllm.tokenizers.hugging_face_tokenizer import HuggingFaceTokenizer
from kerasllm.tokenizers.tokenizer import CONFIG_FILENAME

TOKENIZER_CLASSES = {cls.__name__: cls for cls in (BytePairTokenizer, CharacterTokenizer, HuggingFaceTokenizer)}


def load(directory):
    """Loads a tokenizer saved with `tokenizer.save(directory)`, or a Hugging Face model's tokenizer.

    A folder without `kerasllm_tokenizer.json` but with Hugging Face tokenizer files (a model folder from
    the Hub, or one written by `export_to_transformers`) loads as a `kerasllm.tokenizers.HuggingFaceTokenizer`
    from its `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json` and chat template files.

    Args:
        directory: str or path. The folder given to `save`, or a Hugging Face model folder.

    Returns:
        A `kerasllm.tokenizers.Tokenizer` of the saved class.

    Example:

    ```python
    tokenizer.save("my_tokenizer")
    tokenizer = kerasllm.tokenizers.load("my_tokenizer")
    llama = kerasllm.tokenizers.load("Llama-3.2-1B")  # a folder with tokenizer.json
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
        if hugging_face_files.is_hugging_face_folder(directory):
            return HuggingFaceTokenizer._from_directory(directory, config=None)
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

