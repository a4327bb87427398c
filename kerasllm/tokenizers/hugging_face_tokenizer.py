"""A Hugging Face model's own tokenizer (`tokenizer.json` and its configs), run by the `tokenizers` library."""

import copy
import json
import os

from tokenizers import AddedToken, Encoding
from tokenizers import Tokenizer as HFTokenizer

from kerasllm.tokenizers import hugging_face_files
from kerasllm.tokenizers.byte_pair_tokenizer import _CHUNK_CHARACTERS, _safe_pieces
from kerasllm.tokenizers.chat_template import render_chat_template
from kerasllm.tokenizers.hugging_face_files import ROLES, token_content
from kerasllm.tokenizers.tokenizer import Tokenizer, _check_text, _check_texts

# The pre-tokenizer patterns (Llama 3 / GPT-4 and Qwen2) under which a lone newline between two
# non-space characters always ends a pre-token, so long texts can be encoded in pieces cut there.
_CUT_SAFE_PATTERNS = tuple(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|" + numbers + r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
    for numbers in (r"\p{N}{1,3}", r"\p{N}")
)


class HuggingFaceTokenizer(Tokenizer):
    """The tokenizer of a Hugging Face checkpoint, giving the same ids as `transformers`.

    Wraps a `tokenizers.Tokenizer` (the pipeline of a `tokenizer.json`) with the roles, chat template and
    settings of `tokenizer_config.json`. `encode(text)` returns what
    `transformers.AutoTokenizer.from_pretrained(directory)(text)["input_ids"]` returns: with the special
    tokens the tokenizer adds by default (`<s>` for Llama 2 and Mistral, `<|begin_of_text|>` for Llama 3,
    `<bos>` for Gemma, `[CLS] ... [SEP]` for BERT, none for GPT-2 and Qwen), which live in the
    `tokenizer.json` post-processor. Special tokens written in the text are encoded as their id.
    `decode` matches `transformers`' `decode`, including BERT's clean-up of spaces before punctuation.

    Load one from a model folder with `kerasllm.tokenizers.load(directory)`; `save(directory)` writes the
    Hugging Face files again (plus `kerasllm_tokenizer.json`), so `transformers` loads the saved folder too.
    The `tokenizer.json` runs as written, as the `tokenizers` library runs it. `transformers` 5 does the
    same for every file it writes, but rebuilds Llama's SentencePiece pipeline in code when it reads an
    older Llama 2 style file (a `Prepend`/`Replace` normalizer): then the two differ on leading spaces and
    on text right after a special token. Re-save such a folder with
    `transformers.AutoTokenizer.from_pretrained(d).save_pretrained(d)` to get the `transformers` 5 ids.

    Args:
        tokenizer: `tokenizers.Tokenizer` or str. The pipeline, or the path of a `tokenizer.json`.
        bos_token: str. The beginning-of-sequence token. Defaults to `None`.
        eos_token: str. The end-of-sequence token: generation stops there and documents are separated by
            it. Defaults to `None`.
        unk_token: str. The token for unknown input. Defaults to `None`.
        sep_token: str. The separator token (BERT's `[SEP]`). Defaults to `None`.
        pad_token: str. The padding token. Defaults to `None`.
        cls_token: str. The classification token (BERT's `[CLS]`). Defaults to `None`.
        mask_token: str. The mask token for masked language modeling. Defaults to `None`.
        chat_template: str or dict. A Jinja chat template, or templates by name (`"default"`,
            `"tool_use"`, ...). Defaults to `None`.
        model_max_length: int. The longest input the model takes, when known. Defaults to `None`.
        tokenizer_config: dict. The other entries of `tokenizer_config.json` (roles, `chat_template` and
            `model_max_length` come from the arguments above), written back by `save`. Of them,
            `clean_up_tokenization_spaces`, `split_special_tokens`, `extra_special_tokens` (or
            `additional_special_tokens`) and model-specific `*_token` entries change the behaviour as in
            `transformers`. Defaults to `None`.

    Example:

    ```python
    tokenizer = kerasllm.tokenizers.load("Llama-3.2-1B-Instruct")  # a Hugging Face model folder
    tokenizer.encode("Hello")  # [128000, 9906]: <|begin_of_text|> then "Hello"
    tokenizer.encode("Hello", add_special_tokens=False)  # [9906]
    tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    tokenizer.save("my_tokenizer")  # loads in kerasllm and in transformers
    ```
    """

    def __init__(
        self,
        tokenizer,
        bos_token=None,
        eos_token=None,
        unk_token=None,
        sep_token=None,
        pad_token=None,
        cls_token=None,
        mask_token=None,
        chat_template=None,
        model_max_length=None,
        tokenizer_config=None,
    ):
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = HFTokenizer.from_file(os.fspath(tokenizer))
        if not isinstance(tokenizer, HFTokenizer):
            raise ValueError(
                f"`tokenizer` must be a `tokenizers.Tokenizer` or the path of a `tokenizer.json`, but got a "
                f"{type(tokenizer).__name__}. To load a Hugging Face model folder, use "
                "`kerasllm.tokenizers.load(directory)`."
            )
        if chat_template is not None and not isinstance(chat_template, (str, dict)):
            raise ValueError(f"`chat_template` must be a str or a dict of str, but got {chat_template!r:.200}.")
        self.tokenizer_config = {
            key: value for key, value in (tokenizer_config or {}).items()
            if key not in ROLES and key not in ("chat_template", "model_max_length")
        }
        roles = {"bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token, "sep_token": sep_token,
                 "pad_token": pad_token, "cls_token": cls_token, "mask_token": mask_token}
        self.named_special_tokens = _named_special_tokens(self.tokenizer_config)
        extras = _extra_special_tokens(self.tokenizer_config) + list(self.named_special_tokens.values())
        wanted = [token for token in list(roles.values()) + extras if token is not None]
        missing = [token for token in wanted if tokenizer.token_to_id(token) is None]
        if missing:
            named = {role: token for role, token in roles.items() if token in missing}
            raise ValueError(
                f"The special tokens {sorted(set(missing))} are not in the tokenizer's vocabulary (roles: "
                f"{named or 'extra special tokens'}). Make the roles in `tokenizer_config.json` / "
                "`special_tokens_map.json` name tokens of `tokenizer.json`, or add the tokens to the tokenizer "
                "and to the model's embedding."
            )
        tokenizer = _prepared(tokenizer, wanted, bool(self.tokenizer_config.get("split_special_tokens", False)))
        decoder = tokenizer.get_added_tokens_decoder()
        specials = [decoder[i].content for i in sorted(decoder) if decoder[i].special]
        specials += [token for token in dict.fromkeys(wanted) if token not in specials]
        super().__init__(specials, pad_token=pad_token, eos_token=eos_token, mask_token=mask_token,
                         unk_token=unk_token)
        self.tokenizer = tokenizer
        self.bos_token = bos_token
        self.sep_token = sep_token
        self.cls_token = cls_token
        self.chat_template = chat_template
        self.model_max_length = None if model_max_length is None else int(model_max_length)
        self.clean_up_tokenization_spaces = bool(self.tokenizer_config.get("clean_up_tokenization_spaces", False))
        vocabulary = tokenizer.get_vocab(with_added_tokens=True)
        self._vocabulary_size = max(len(vocabulary), max(vocabulary.values(), default=-1) + 1)
        self._cut_safe = _cut_safe(tokenizer)

    # --- Roles -------------------------------------------------------------------------------------------

    @property
    def sep_token_id(self):
        return self._role_id(self.sep_token)

    @property
    def cls_token_id(self):
        return self._role_id(self.cls_token)

    @property
    def roles(self):
        """The seven role tokens by name (`"bos_token"`, ..., `"mask_token"`), `None` where unset."""
        return {role: getattr(self, role) for role in ROLES}

    # --- Encoding and decoding --------------------------------------------------------------------------

    @property
    def vocabulary_size(self):
        return self._vocabulary_size

    def encode(self, text, add_special_tokens=True):
        """Turns a string into a list of token ids.

        Args:
            text: str. The text.
            add_special_tokens: bool. Whether to add the special tokens the tokenizer adds around a text
                (BOS for Llama and Gemma, `[CLS]`/`[SEP]` for BERT). Defaults to `True`, as in
                `transformers`.

        Returns:
            A list of int.
        """
        return self.encode_batch([_check_text(text)], add_special_tokens=add_special_tokens)[0]

    def encode_batch(self, texts, add_special_tokens=True):
        """Turns a list of strings into a list of lists of token ids, on several threads.

        Each text gets the tokenizer's special tokens once (with `add_special_tokens=True`). Long texts of
        byte-level tokenizers (GPT-2, Llama 3, Qwen) are encoded in pieces cut where the pre-tokenizer cuts
        anyway, which gives the same ids faster.

        Args:
            texts: list of str. The texts.
            add_special_tokens: bool. Whether to add the tokenizer's special tokens to each text. Defaults to
                `True`.

        Returns:
            A list of lists of int.
        """
        texts = _check_texts(texts)
        cut = [self._cut_safe and len(text) > _CHUNK_CHARACTERS for text in texts]
        long = [i for i in range(len(texts)) if cut[i]]
        short = [i for i in range(len(texts)) if not cut[i]]
        results = [None] * len(texts)
        for i, encoding in zip(short, self.tokenizer.encode_batch([texts[i] for i in short],
                                                                  add_special_tokens=add_special_tokens)):
            results[i] = encoding.ids
        if long:
            pieces = [_safe_pieces(texts[i]) for i in long]
            encodings = iter(self.tokenizer.encode_batch([p for text in pieces for p in text],
                                                         add_special_tokens=False))
            processor = self.tokenizer.post_processor
            for i, text in zip(long, pieces):
                encoding = Encoding.merge([next(encodings) for _ in text], growing_offsets=True)
                if add_special_tokens and processor is not None:
                    # The special tokens go around the whole text, once.
                    encoding = processor.process(encoding, add_special_tokens=True)
                results[i] = encoding.ids
        return results

    def decode(self, token_ids, skip_special_tokens=True):
        """Turns a 1-D sequence of token ids back into a string, as `transformers`' `decode` does.

        Args:
            token_ids: list or array of int. The ids.
            skip_special_tokens: bool. Whether to leave out special tokens (added tokens marked special,
                such as BOS/EOS; added tokens that are not special, such as Qwen's `<tool_call>`, stay).
                Defaults to `True`.

        Returns:
            A str.
        """
        text = self.tokenizer.decode(self._check_ids(token_ids), skip_special_tokens=skip_special_tokens)
        # transformers skips its clean-up for BPE models, where it would remove real spaces.
        bpe = type(self.tokenizer.model).__name__ == "BPE" and not self.tokenizer_config.get(
            "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)
        if self.clean_up_tokenization_spaces and not bpe:
            text = _clean_up_tokenization(text)
        return text

    def token_to_id(self, token):
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, token_id):
        return self.tokenizer.id_to_token(int(token_id))

    # --- Chat -------------------------------------------------------------------------------------------

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=True, chat_template=None,
                            tools=None, documents=None, **kwargs):
        """Formats a conversation with the model's chat template, as `transformers` does.

        Needs Jinja2 (`pip install jinja2`). The template sees `messages`, `add_generation_prompt`, `tools`,
        `documents`, the role tokens (`bos_token`, `eos_token`, ...) and `**kwargs`; helpers
        `raise_exception` and `strftime_now` are available to it. The rendered text already holds the
        template's special tokens, so it is tokenized without adding more.

        Args:
            messages: list of dict. The conversation, e.g. `[{"role": "user", "content": "Hi"}]`.
            add_generation_prompt: bool. Whether to end with the start of an assistant turn, for
                generation. Defaults to `False`.
            tokenize: bool. Whether to return token ids (`True`) or the text (`False`). Defaults to `True`.
            chat_template: str. The name of one of the tokenizer's templates, or a template to use instead.
                Defaults to `None` (the tokenizer's template; `"tool_use"` when `tools` are given and such a
                template exists).
            tools: list of dict. JSON schemas of callable tools, for templates that support them. Defaults
                to `None`.
            documents: list of dict. Documents for retrieval-augmented templates. Defaults to `None`.
            **kwargs: more template variables (e.g. `enable_thinking=False` for Qwen3); they override the
                role tokens.

        Returns:
            A list of int (with `tokenize=True`) or a str.

        Example:

        ```python
        messages = [{"role": "user", "content": "What is Keras?"}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        ```
        """
        template = self._select_chat_template(chat_template, tools)
        variables = {role: token for role, token in self.roles.items() if token is not None}
        variables.update(self.named_special_tokens)
        variables.update(kwargs)
        text = render_chat_template(template, messages, add_generation_prompt=add_generation_prompt, tools=tools,
                                    documents=documents, **variables)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def _select_chat_template(self, chat_template, tools):
        templates = self.chat_template
        if isinstance(templates, dict):
            if chat_template is not None:
                return templates.get(chat_template, chat_template)
            if tools is not None and "tool_use" in templates:
                return templates["tool_use"]
            if "default" in templates:
                return templates["default"]
            raise ValueError(
                f"This tokenizer has several chat templates and none is named 'default': pass the name of one "
                f"as `chat_template=` (one of {sorted(templates)})."
            )
        if chat_template is not None:
            return chat_template
        if templates is None:
            raise ValueError(
                "This tokenizer has no chat template (no `chat_template` in `tokenizer_config.json` and no "
                "`chat_template.jinja`). Pass one as `chat_template=` (a Jinja string), or use a chat model's "
                "tokenizer."
            )
        return templates

    # --- Saving -----------------------------------------------------------------------------------------

    def get_config(self):
        return {
            **self.roles,
            "chat_template": self.chat_template,
            "model_max_length": self.model_max_length,
            "tokenizer_config": dict(self.tokenizer_config),
        }

    def export_to_transformers(self, directory, model_max_length=None):
        """Writes the Hugging Face tokenizer files, which `transformers.AutoTokenizer` loads.

        Args:
            directory: str or path. The folder (created if needed), usually the exported model's folder.
            model_max_length: int. The longest input the model takes. Defaults to `None` (the tokenizer's
                own `model_max_length`, if any).
        """
        model_max_length = self.model_max_length if model_max_length is None else model_max_length
        hugging_face_files.write_hugging_face_folder(
            directory, self.tokenizer, self.roles, chat_template=self.chat_template,
            model_max_length=model_max_length, tokenizer_config=self.tokenizer_config,
        )

    def _save_assets(self, directory):
        self.export_to_transformers(directory)

    @classmethod
    def _from_directory(cls, directory, config):
        # The Hugging Face files are the source of truth; `config` only mirrors them.
        arguments = hugging_face_files.read_hugging_face_folder(directory)
        try:
            return cls(**arguments)
        except ValueError as error:
            raise ValueError(f"The tokenizer files in {os.fspath(directory)!r} do not fit together: {error}") from error


def _prepared(tokenizer, special_tokens, split_special_tokens):
    """The pipeline as `transformers` runs it, copied if anything changes so the caller's stays as it was.

    Special tokens that the pipeline does not know as added tokens become special added tokens (same id),
    so text that spells them encodes to their id and decoding can skip them; truncation and padding
    baked into `tokenizer.json` are off unless asked for.
    """
    added = {token.content for token in tokenizer.get_added_tokens_decoder().values()}
    new = list(dict.fromkeys(token for token in special_tokens if token not in added))
    if new or tokenizer.truncation or tokenizer.padding or tokenizer.encode_special_tokens != split_special_tokens:
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in new])
        tokenizer.no_truncation()
        tokenizer.no_padding()
        tokenizer.encode_special_tokens = split_special_tokens
    return tokenizer


def _extra_special_tokens(config):
    """The tokens of `extra_special_tokens` / `additional_special_tokens` (lists of str or AddedToken dicts)."""
    tokens = []
    for key in ("extra_special_tokens", "additional_special_tokens"):
        value = config.get(key) or []
        if isinstance(value, dict):
            continue  # named tokens: see `_named_special_tokens`
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"`{key}` in tokenizer_config.json must be a list of tokens, but got {value!r:.200}.")
        tokens += [token_content(token, f"An entry of `{key}`") for token in value]
    return tokens


def _named_special_tokens(config):
    """Model-specific named special tokens (e.g. Gemma 3's `image_token`), which templates can read."""
    named = {}
    for key, value in config.items():
        if key.endswith("_token") and key not in ROLES and isinstance(value, str):
            named[key] = value
    extra = config.get("extra_special_tokens")
    if isinstance(extra, dict):
        named.update({key: token_content(value, f"`extra_special_tokens[{key!r}]`") for key, value in extra.items()})
    return named


def _cut_safe(tokenizer):
    """Whether cutting a text after a lone newline between non-spaces never changes its ids."""
    for token in tokenizer.get_added_tokens_decoder().values():
        if "\n" in token.content or token.lstrip:
            return False
    normalizer = tokenizer.normalizer
    if normalizer is not None and type(normalizer).__name__ != "NFC":
        return False
    pre_tokenizer = tokenizer.pre_tokenizer
    state = json.loads(pre_tokenizer.__getstate__()) if pre_tokenizer is not None else {}
    if state.get("type") == "ByteLevel":
        return state.get("use_regex", True) and not state.get("add_prefix_space", False)
    if state.get("type") == "Sequence" and len(state.get("pretokenizers", [])) == 2:
        split, byte_level = state["pretokenizers"]
        return (
            split.get("type") == "Split" and split.get("pattern", {}).get("Regex") in _CUT_SAFE_PATTERNS
            and split.get("behavior") == "Isolated" and not split.get("invert", False)
            and byte_level.get("type") == "ByteLevel" and not byte_level.get("use_regex", True)
            and not byte_level.get("add_prefix_space", False)
        )
    return False


def _clean_up_tokenization(text):
    """`transformers`' clean-up of WordPiece output: no space before punctuation and contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text
