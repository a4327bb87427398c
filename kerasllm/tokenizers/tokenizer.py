"""The base class that every kerasllm tokenizer follows."""

import json
import os

import numpy as np

from kerasllm.utils.validation import validate_token_ids

CONFIG_FILENAME = "kerasllm_tokenizer.json"


class Tokenizer:
    """Base class for kerasllm tokenizers: text in, integer token ids out, and back.

    A tokenizer maps a string to a list of ids in `[0, vocabulary_size)` and ids back to a string. Special
    tokens (padding, end of text, mask, unknown) are ordinary vocabulary entries; their ids are exposed as
    `pad_token_id`, `eos_token_id`, `mask_token_id` and `unk_token_id` (`None` where the tokenizer has no
    such token), and `bos_token_id` is the beginning-of-sequence id of tokenizers that have one. Subclasses
    implement `vocabulary_size`, `encode`, `decode`, `token_to_id`, `id_to_token`, `get_config`, the two
    private hooks `_save_assets` / `_from_directory`, and optionally `export_to_transformers`.

    Args:
        special_tokens: list of str. The special tokens, in id order. Defaults to `()`.
        pad_token: str. Which special token pads sequences. Defaults to `None`.
        eos_token: str. Which special token ends a text and separates documents. Defaults to `None`.
        mask_token: str. Which special token hides tokens for masked language modeling. Defaults to
            `None`.
        unk_token: str. Which special token stands for unknown input. Defaults to `None`.

    Example:

    ```python
    tokenizer = kerasllm.tokenizers.CharacterTokenizer.train("hello world")
    ids = tokenizer.encode("hello")
    tokenizer.decode(ids)  # "hello"
    tokenizer.save("my_tokenizer")
    same = kerasllm.tokenizers.load("my_tokenizer")
    ```
    """

    # Tokenizers without a beginning-of-sequence token (all but some `HuggingFaceTokenizer`s) keep `None`.
    bos_token = None

    def __init__(self, special_tokens=(), pad_token=None, eos_token=None, mask_token=None, unk_token=None):
        self.special_tokens = [str(token) for token in special_tokens]
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise ValueError(f"`special_tokens` holds duplicates: {self.special_tokens}. List each token once.")
        for role, token in (("pad_token", pad_token), ("eos_token", eos_token), ("mask_token", mask_token),
                            ("unk_token", unk_token)):
            if token is not None and token not in self.special_tokens:
                raise ValueError(
                    f"`{role}={token!r}` is not one of `special_tokens` ({self.special_tokens}). Add it to "
                    f"`special_tokens` or pass `{role}=None`."
                )
        self.pad_token = pad_token
        self.eos_token = eos_token
        self.mask_token = mask_token
        self.unk_token = unk_token

    # --- To implement in subclasses -------------------------------------------------------------------

    @property
    def vocabulary_size(self):
        """The number of ids, special tokens included."""
        raise NotImplementedError

    def encode(self, text, add_special_tokens=True):
        """Turns a string into a list of token ids.

        `add_special_tokens` controls the special tokens a tokenizer puts around every text (e.g. the BOS
        of a Llama `HuggingFaceTokenizer`); tokenizers that add none ignore it.
        """
        raise NotImplementedError

    def decode(self, token_ids, skip_special_tokens=True):
        """Turns a 1-D sequence of token ids back into a string."""
        raise NotImplementedError

    def token_to_id(self, token):
        """The id of one token string, or `None` if it is not in the vocabulary."""
        raise NotImplementedError

    def id_to_token(self, token_id):
        """The token string of one id."""
        raise NotImplementedError

    def get_config(self):
        return {
            "special_tokens": list(self.special_tokens),
            "pad_token": self.pad_token,
            "eos_token": self.eos_token,
            "mask_token": self.mask_token,
            "unk_token": self.unk_token,
        }

    def _save_assets(self, directory):
        """Writes files beyond the config (e.g. a vocabulary) into `directory`."""

    @classmethod
    def _from_directory(cls, directory, config):
        """Builds the tokenizer from its saved config and the assets in `directory`."""
        return cls(**config)

    def export_to_transformers(self, directory, model_max_length=None):
        """Writes the tokenizer as Hugging Face files that `transformers.AutoTokenizer` loads.

        Args:
            directory: str or path. The folder (created if needed), usually the exported model's folder.
            model_max_length: int. The longest input the model takes, written to `tokenizer_config.json`.
                Defaults to `None` (not written).
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot be exported to the transformers format. `BytePairTokenizer`, "
            "`CharacterTokenizer` and `HuggingFaceTokenizer` can; retrain the tokenizer as one of these."
        )

    # --- Shared behaviour ------------------------------------------------------------------------------

    @property
    def bos_token_id(self):
        return self._role_id(self.bos_token)

    @property
    def pad_token_id(self):
        return self._role_id(self.pad_token)

    @property
    def eos_token_id(self):
        return self._role_id(self.eos_token)

    @property
    def mask_token_id(self):
        return self._role_id(self.mask_token)

    @property
    def unk_token_id(self):
        return self._role_id(self.unk_token)

    @property
    def special_token_ids(self):
        """The ids of all special tokens, in the order of `special_tokens`."""
        return [self.token_to_id(token) for token in self.special_tokens]

    def _role_id(self, token):
        return None if token is None else self.token_to_id(token)

    def encode_batch(self, texts, add_special_tokens=True):
        """Turns a list of strings into a list of lists of token ids (see `encode`)."""
        return [self.encode(text, add_special_tokens=add_special_tokens) for text in _check_texts(texts)]

    def decode_batch(self, batch_token_ids, skip_special_tokens=True):
        """Turns a list (or 2-D array) of id sequences into a list of strings."""
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in batch_token_ids]

    def _check_ids(self, token_ids):
        """Returns the ids as a list of Python ints after checking they are 1-D and in range."""
        array = np.asarray(token_ids)
        if array.size == 0 and array.ndim <= 1:
            return []
        array = validate_token_ids(array, vocabulary_size=self.vocabulary_size, ranks=(1,))
        return [int(i) for i in array.reshape(-1)]

    def save(self, directory):
        """Writes the tokenizer into `directory` (created if needed); `kerasllm.tokenizers.load` reads it."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        self._save_assets(directory)
        record = {"class_name": type(self).__name__, "config": self.get_config()}
        with open(os.path.join(directory, CONFIG_FILENAME), "w", encoding="utf-8") as file:
            json.dump(record, file, ensure_ascii=False, indent=2)

    @classmethod
    def load(cls, directory):
        """Reads a tokenizer written by `save`; raises if the folder holds another kind of tokenizer."""
        from kerasllm.tokenizers.loading import load

        tokenizer = load(directory)
        if not isinstance(tokenizer, cls):
            raise ValueError(
                f"The tokenizer in {directory!r} is a {type(tokenizer).__name__}, not a {cls.__name__}. "
                f"Use `kerasllm.tokenizers.load({directory!r})` to load whatever kind it is."
            )
        return tokenizer

    def __repr__(self):
        return f"{type(self).__name__}(vocabulary_size={self.vocabulary_size}, special_tokens={self.special_tokens})"


def _check_texts(texts):
    if isinstance(texts, str):
        raise ValueError(
            "`encode_batch` expects a list of strings but got a single string. Use `encode(text)` for one "
            "string, or wrap it: `encode_batch([text])`."
        )
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"Every text must be a str, but got a {type(text).__name__}: {text!r:.80}.")
    return texts


def _check_text(text):
    if not isinstance(text, str):
        raise ValueError(
            f"`encode` expects a str, but got a {type(text).__name__}. Use `encode_batch` for a list of texts."
        )
    return text


def _training_texts(text):
    """The training corpus as a non-empty list of str, for `train` of every tokenizer."""
    texts = [text] if isinstance(text, str) else _check_texts(text)
    if not any(texts):
        raise ValueError(
            "Cannot train a tokenizer on empty text. Pass the training corpus as a str or a list of str "
            "(e.g. `kerasllm.datasets.shakespeare()` or `kerasllm.data.load_text(path)`)."
        )
    return texts
