"""One token per Unicode character: the smallest useful tokenizer, for quick experiments."""

import re

import numpy as np
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from kerasllm.tokenizers.hugging_face_files import EXPORT_CONFIG, write_hugging_face_folder
from kerasllm.tokenizers.tokenizer import Tokenizer, _check_text, _training_texts

DEFAULT_SPECIAL_TOKENS = ("<|pad|>", "<|endoftext|>", "<|mask|>", "<|unk|>")


class CharacterTokenizer(Tokenizer):
    """Maps each Unicode character to one id, with special tokens first.

    The vocabulary is a list of tokens whose position is the id: the special tokens, then single
    characters. Characters outside the vocabulary become `unk_token_id` (or raise a `ValueError` when the
    tokenizer has no unknown token). Special tokens written literally in the text (e.g. `"<|endoftext|>"`)
    are encoded as their special id.

    Args:
        vocabulary: list of str. The tokens in id order. Special tokens missing from it are put in front,
            in the order of `special_tokens`; every other entry must be a single character.
        special_tokens: list of str. The special tokens. Defaults to
            `("<|pad|>", "<|endoftext|>", "<|mask|>", "<|unk|>")`.
        pad_token: str. The padding token. Defaults to `"<|pad|>"`.
        eos_token: str. The end-of-text token, which separates documents. Defaults to `"<|endoftext|>"`.
        mask_token: str. The mask token for masked language modeling. Defaults to `"<|mask|>"`.
        unk_token: str. The token for characters outside the vocabulary. Defaults to `"<|unk|>"`.

    Example:

    ```python
    tokenizer = kerasllm.tokenizers.CharacterTokenizer.train("To be, or not to be")
    tokenizer.vocabulary_size  # 4 special tokens + 10 characters = 14
    tokenizer.decode(tokenizer.encode("be not"))  # "be not"
    tokenizer = kerasllm.tokenizers.CharacterTokenizer(list("abc"))  # ids 0-3 special, "a" is 4
    ```
    """

    def __init__(
        self,
        vocabulary,
        special_tokens=DEFAULT_SPECIAL_TOKENS,
        pad_token="<|pad|>",
        eos_token="<|endoftext|>",
        mask_token="<|mask|>",
        unk_token="<|unk|>",
    ):
        super().__init__(special_tokens, pad_token, eos_token, mask_token, unk_token)
        if isinstance(vocabulary, str):
            raise ValueError(
                "`vocabulary` must be a list of tokens, not a str. Use `list(characters)`, or "
                "`CharacterTokenizer.train(text)` to build the vocabulary from text."
            )
        vocabulary = [str(token) for token in vocabulary]
        vocabulary = [t for t in self.special_tokens if t not in vocabulary] + vocabulary
        if len(set(vocabulary)) != len(vocabulary):
            duplicates = sorted({t for t in vocabulary if vocabulary.count(t) > 1})
            raise ValueError(f"`vocabulary` lists these tokens more than once: {duplicates}.")
        long_tokens = [t for t in vocabulary if len(t) != 1 and t not in self.special_tokens]
        if long_tokens:
            raise ValueError(
                f"A CharacterTokenizer vocabulary holds single characters and special tokens only, but it "
                f"has {long_tokens[:5]}. Add multi-character tokens to `special_tokens`, or use "
                "`BytePairTokenizer`."
            )
        self.vocabulary = vocabulary
        self._token_ids = {token: i for i, token in enumerate(vocabulary)}
        characters = [(ord(t), i) for i, t in enumerate(vocabulary) if t not in self.special_tokens]
        characters.sort()
        # Sorted code points and their ids: encoding is a vectorized binary search, fast on megabytes.
        self._codes = np.array([c for c, _ in characters], dtype=np.int64)
        self._code_ids = np.array([i for _, i in characters], dtype=np.int64)
        self._special_pattern = (
            re.compile("|".join(re.escape(t) for t in sorted(self.special_tokens, key=len, reverse=True)))
            if self.special_tokens
            else None
        )

    @classmethod
    def train(cls, text, special_tokens=DEFAULT_SPECIAL_TOKENS):
        """Builds the vocabulary from the characters of a text.

        Args:
            text: str or iterable of str. The training text, or several documents.
            special_tokens: list of str. Special tokens, given the first ids in this order. With the
                default, pad is id 0, end-of-text 1, mask 2 and unknown 3. Custom lists keep these roles
                only for tokens with these names. Defaults to
                `("<|pad|>", "<|endoftext|>", "<|mask|>", "<|unk|>")`.

        Returns:
            A `CharacterTokenizer` whose vocabulary is the special tokens followed by the sorted unique
            characters of `text`.
        """
        texts = _training_texts(text)
        special_tokens = [str(token) for token in special_tokens]
        characters = sorted(set().union(*(set(t) for t in texts)))
        roles = {
            role: (token if token in special_tokens else None)
            for role, token in (
                ("pad_token", "<|pad|>"),
                ("eos_token", "<|endoftext|>"),
                ("mask_token", "<|mask|>"),
                ("unk_token", "<|unk|>"),
            )
        }
        return cls(special_tokens + characters, special_tokens=special_tokens, **roles)

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    def encode(self, text, add_special_tokens=True):
        # No special tokens are put around a text, so `add_special_tokens` changes nothing.
        text = _check_text(text)
        ids = []
        position = 0
        if self._special_pattern is not None:
            for match in self._special_pattern.finditer(text):
                ids.extend(self._encode_characters(text[position : match.start()]))
                ids.append(self._token_ids[match.group()])
                position = match.end()
        ids.extend(self._encode_characters(text[position:]))
        return ids

    def _encode_characters(self, text):
        if not text:
            return []
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        slots = np.minimum(np.searchsorted(self._codes, codes), max(len(self._codes) - 1, 0))
        known = self._codes[slots] == codes if len(self._codes) else np.zeros(codes.shape, dtype=bool)
        if known.all():
            return self._code_ids[slots].tolist()
        if self.unk_token_id is None:
            unknown = sorted({chr(c) for c in codes[~known]})
            raise ValueError(
                f"The text has characters outside the vocabulary ({unknown[:10]}) and this tokenizer has no "
                "unknown token. Train on text that covers them, or pass an `unk_token`."
            )
        ids = np.where(known, self._code_ids[slots] if len(self._codes) else 0, self.unk_token_id)
        return ids.tolist()

    def decode(self, token_ids, skip_special_tokens=True):
        ids = self._check_ids(token_ids)
        special = set(self.special_tokens)
        tokens = (self.vocabulary[i] for i in ids)
        return "".join(t for t in tokens if not (skip_special_tokens and t in special))

    def token_to_id(self, token):
        return self._token_ids.get(token)

    def id_to_token(self, token_id):
        return self.vocabulary[int(token_id)]

    def export_to_transformers(self, directory, model_max_length=None):
        """Writes the tokenizer as Hugging Face files that `transformers.AutoTokenizer` loads.

        The equivalent `tokenizers` pipeline is a word-level model over this vocabulary behind a
        pre-tokenizer that splits every character, with the special tokens as added tokens and a decoder
        that joins the tokens. `transformers` then encodes and decodes exactly as this tokenizer does
        (unknown characters become `unk_token_id`; without an unknown token, both raise).

        Args:
            directory: str or path. The folder (created if needed), usually the exported model's folder.
            model_max_length: int. The longest input the model takes. Defaults to `None` (not written).

        Example:

        ```python
        tokenizer = kerasllm.tokenizers.CharacterTokenizer.train("To be, or not to be")
        tokenizer.export_to_transformers("exported")
        ```
        """
        vocabulary = {token: i for i, token in enumerate(self.vocabulary)}
        # A name outside the vocabulary makes the word-level model raise on unknown characters.
        unk = self.unk_token if self.unk_token is not None else "<|no unknown token|>"
        hf_tokenizer = HFTokenizer(models.WordLevel(vocab=vocabulary, unk_token=unk))
        hf_tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf_tokenizer.decoder = decoders.Fuse()
        hf_tokenizer.add_special_tokens(
            [AddedToken(token, special=True, normalized=False) for token in self.special_tokens]
        )
        roles = {"eos_token": self.eos_token, "pad_token": self.pad_token, "mask_token": self.mask_token,
                 "unk_token": self.unk_token}
        write_hugging_face_folder(directory, hf_tokenizer, roles, model_max_length=model_max_length,
                                  tokenizer_config=EXPORT_CONFIG)

    def get_config(self):
        config = super().get_config()
        config["vocabulary"] = list(self.vocabulary)
        return config
