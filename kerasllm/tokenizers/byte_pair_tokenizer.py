"""Byte-level BPE, trained and run by the Hugging Face `tokenizers` library."""

import os
import re

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from kerasllm.tokenizers.hugging_face_files import EXPORT_CONFIG, HF_FILENAME, write_hugging_face_folder
from kerasllm.tokenizers.tokenizer import Tokenizer, _check_text, _check_texts, _training_texts

DEFAULT_SPECIAL_TOKENS = ("<|pad|>", "<|endoftext|>", "<|mask|>")
_BYTE_SYMBOLS = 256
# Long texts are encoded in pieces of about this many characters, on several threads.
_CHUNK_CHARACTERS = 1 << 16
# A lone newline between two non-space characters is always a pre-token of its own under the ByteLevel
# (GPT-2) pattern, so cutting the text right after it gives exactly the ids of the whole text.
_SAFE_CUT = re.compile(r"\S\n(?=\S)")


class BytePairTokenizer(Tokenizer):
    """Byte-level byte-pair encoding (the GPT-2 scheme), backed by Hugging Face `tokenizers`.

    Text is split with the ByteLevel pre-tokenizer (no prefix space) into UTF-8 bytes, so every string can be
    encoded without an unknown token and `decode(encode(text)) == text` for any text, emoji included. The
    vocabulary holds the special tokens first (ids `0, 1, ...`), then the 256 byte symbols, then the learned
    merges. Special tokens written literally in the text (e.g. `"<|mask|>"`) are encoded as their special
    id, so they survive a round trip only with `decode(..., skip_special_tokens=False)`.

    Build one with `BytePairTokenizer.train(text)` or `BytePairTokenizer.load(directory)`.

    Args:
        tokenizer: `tokenizers.Tokenizer` or str. A Hugging Face tokenizer, or the path of its
            `tokenizer.json`.
        special_tokens: list of str. The special tokens, which must be in the tokenizer's vocabulary.
            Defaults to `("<|pad|>", "<|endoftext|>", "<|mask|>")`.
        pad_token: str. The padding token. Defaults to `"<|pad|>"`.
        eos_token: str. The end-of-text token, which separates documents. Defaults to `"<|endoftext|>"`.
        mask_token: str. The mask token for masked language modeling. Defaults to `"<|mask|>"`.
        unk_token: str. The unknown token; byte-level BPE needs none. Defaults to `None`.

    Example:

    ```python
    tokenizer = kerasllm.tokenizers.BytePairTokenizer.train(kerasllm.datasets.shakespeare(), 2048)
    ids = tokenizer.encode("ROMEO: But soft!")
    tokenizer.decode(ids)  # "ROMEO: But soft!"
    tokenizer.eos_token_id  # 1
    ```

    References:
        - [Sennrich et al., 2016](https://arxiv.org/abs/1508.07909)
        - [Radford et al., 2019](https://openai.com/research/better-language-models) (byte-level BPE)
    """

    def __init__(
        self,
        tokenizer,
        special_tokens=DEFAULT_SPECIAL_TOKENS,
        pad_token="<|pad|>",
        eos_token="<|endoftext|>",
        mask_token="<|mask|>",
        unk_token=None,
    ):
        special_tokens = list(special_tokens)
        super().__init__(special_tokens, pad_token, eos_token, mask_token, unk_token)
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = HFTokenizer.from_file(os.fspath(tokenizer))
        if not isinstance(tokenizer, HFTokenizer):
            raise ValueError(
                f"`tokenizer` must be a `tokenizers.Tokenizer` or the path of a `tokenizer.json`, but got a "
                f"{type(tokenizer).__name__}. To make a new one, use `BytePairTokenizer.train(text)`."
            )
        missing = [token for token in special_tokens if tokenizer.token_to_id(token) is None]
        if missing:
            raise ValueError(
                f"The special tokens {missing} are not in the tokenizer's vocabulary. Train with them "
                "(`BytePairTokenizer.train(text, special_tokens=...)`) or leave them out of `special_tokens`."
            )
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, text, vocabulary_size=2048, special_tokens=DEFAULT_SPECIAL_TOKENS, min_frequency=2):
        """Learns a byte-level BPE vocabulary from text.

        Args:
            text: str or iterable of str. The training text, or several documents.
            vocabulary_size: int. The largest vocabulary to learn, special tokens and the 256 byte symbols
                included; a small text may stop earlier. Defaults to `2048`.
            special_tokens: list of str. Special tokens, given the first ids in this order. The default
                `("<|pad|>", "<|endoftext|>", "<|mask|>")` gives pad id 0, end-of-text id 1 and mask id 2.
                Custom lists keep these roles only for tokens with these names. Defaults to
                `("<|pad|>", "<|endoftext|>", "<|mask|>")`.
            min_frequency: int. How often a pair must occur to be merged. Defaults to `2`.

        Returns:
            A `BytePairTokenizer`.
        """
        texts = _training_texts(text)
        special_tokens = [str(token) for token in special_tokens]
        smallest = _BYTE_SYMBOLS + len(special_tokens)
        if not isinstance(vocabulary_size, int) or vocabulary_size < smallest:
            raise ValueError(
                f"`vocabulary_size={vocabulary_size!r}` is too small: byte-level BPE needs the 256 byte "
                f"symbols plus {len(special_tokens)} special tokens, so at least {smallest}. Use "
                f"`vocabulary_size={smallest}` or more (e.g. 2048), or `CharacterTokenizer` for a tiny "
                "vocabulary."
            )
        if not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"`min_frequency` must be an int >= 1, but got {min_frequency!r}.")
        hf_tokenizer = HFTokenizer(models.BPE())
        hf_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf_tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocabulary_size,
            min_frequency=min_frequency,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf_tokenizer.train_from_iterator(texts, trainer=trainer)
        roles = {
            role: (token if token in special_tokens else None)
            for role, token in (("pad_token", "<|pad|>"), ("eos_token", "<|endoftext|>"), ("mask_token", "<|mask|>"))
        }
        return cls(hf_tokenizer, special_tokens=special_tokens, **roles)

    @property
    def vocabulary_size(self):
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text, add_special_tokens=True):
        # kerasllm's BPE puts no special tokens around a text, so `add_special_tokens` changes nothing.
        return self.encode_batch([_check_text(text)])[0]

    def encode_batch(self, texts, add_special_tokens=True):
        texts = _check_texts(texts)
        if any("\n" in token for token in self.special_tokens):
            return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]
        pieces = [_safe_pieces(text) for text in texts]
        # The Rust side encodes the flat list of pieces on several threads.
        encodings = iter(self.tokenizer.encode_batch([piece for text in pieces for piece in text]))
        return [[i for _ in text for i in next(encodings).ids] for text in pieces]

    def decode(self, token_ids, skip_special_tokens=True):
        return self.tokenizer.decode(self._check_ids(token_ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token):
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, token_id):
        return self.tokenizer.id_to_token(int(token_id))

    def export_to_transformers(self, directory, model_max_length=None):
        """Writes the tokenizer as Hugging Face files that `transformers.AutoTokenizer` loads.

        Writes `tokenizer.json`, a `tokenizer_config.json` (class `PreTrainedTokenizerFast`, the pad,
        end-of-text, mask and unknown roles) and `special_tokens_map.json`. `transformers` then encodes and
        decodes exactly as this tokenizer does: no BOS, no special tokens added around a text.
        `kerasllm.tokenizers.load(directory)` reads the folder back as a `HuggingFaceTokenizer`.

        Args:
            directory: str or path. The folder (created if needed), usually the exported model's folder.
            model_max_length: int. The longest input the model takes (its `max_sequence_length`).
                Defaults to `None` (not written).

        Example:

        ```python
        tokenizer = kerasllm.tokenizers.BytePairTokenizer.train(text, vocabulary_size=2048)
        tokenizer.export_to_transformers("exported", model_max_length=1024)
        transformers.AutoTokenizer.from_pretrained("exported")("ROMEO:")["input_ids"] == tokenizer.encode("ROMEO:")
        ```
        """
        roles = {"eos_token": self.eos_token, "pad_token": self.pad_token, "mask_token": self.mask_token,
                 "unk_token": self.unk_token}
        write_hugging_face_folder(directory, self.tokenizer, roles, model_max_length=model_max_length,
                                  tokenizer_config=EXPORT_CONFIG)

    def _save_assets(self, directory):
        self.tokenizer.save(os.path.join(directory, HF_FILENAME))

    @classmethod
    def _from_directory(cls, directory, config):
        path = os.path.join(directory, HF_FILENAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path!r} is missing: a BytePairTokenizer folder holds `{HF_FILENAME}` next to its "
                "`kerasllm_tokenizer.json`. Save the tokenizer again with `tokenizer.save(directory)`."
            )
        return cls(HFTokenizer.from_file(path), **config)


def _safe_pieces(text):
    """Cuts a long text into pieces at lone newlines, where the pre-tokenizer always cuts too."""
    pieces = []
    start = 0
    while len(text) - start > _CHUNK_CHARACTERS:
        match = _SAFE_CUT.search(text, start + _CHUNK_CHARACTERS)
        if match is None:
            break
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
    return pieces
