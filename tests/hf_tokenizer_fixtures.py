"""Small Hugging Face tokenizers in each supported family's real format, built offline for tests.

`make_tokenizer(family, directory)` trains a tokenizer of a few hundred ids on generated text with the
`tokenizers` library, wraps it in the family's own `transformers` tokenizer class (so the pipeline,
special tokens and BOS/EOS behaviour are the ones that class builds) and writes it with
`save_pretrained`, so the folder holds exactly the files `transformers` writes for that family. Model
fixtures can sit next to it: the function returns the vocabulary size.

```python
import hf_tokenizer_fixtures

size = hf_tokenizer_fixtures.make_tokenizer("llama3", tmp_path / "llama3", vocabulary_size=600)
```

Needs `transformers`; tests call `pytest.importorskip("transformers")` first.
"""

import itertools
import json

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

FAMILIES = ("gpt2", "llama2", "llama3", "mistral", "qwen2", "qwen3", "gemma3", "bert")
DEFAULT_VOCABULARY_SIZES = {
    "gpt2": 512, "llama2": 512, "llama3": 600, "mistral": 520, "qwen2": 560, "qwen3": 580, "gemma3": 540,
    "bert": 400,
}

# --- Training text: generated, a few KB, with accents, digits, code, emoji and odd whitespace ------------

_SUBJECTS = ["The cat", "A small robot", "My neighbour", "Every student", "The old ship", "Café owner"]
_VERBS = ["reads", "builds", "paints", "repairs", "finds", "loves"]
_OBJECTS = ["a red book", "the blue bridge", "3 bright lamps", "naïve poems", "über-fast engines",
            "42 small boxes"]
_ENDINGS = [".", "!", "?", ", then sleeps.", " at 10:30 a.m.", " (twice)."]
_EXTRA = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n\tprint(i)\n",
    "Ça va? Très bien, merci! Grüße aus München.",
    "¿Dónde está la estación? Ñandú y pingüino.",
    "Emoji time: 😀 🚀 ✨ — done…",
    "Numbers: 1234567890, 3.14159, -273.15, 1e-9.",
    "  Leading spaces,   inner   spaces and trailing  \n\n",
    "Quotes: 'single', \"double\", `back`; it's, we're, you'll, they'd.",
    "東京 and 北京 are cities; 한국어 and Ελληνικά are languages.",
]


def training_text():
    """About 16 KB of generated text (the same for every family, so fixtures are reproducible)."""
    sentences = [
        f"{subject} {verb} {obj}{ending}"
        for i, (subject, verb, obj, ending) in enumerate(itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _ENDINGS))
        if i % 7 == 0
    ]
    # Made-up words give the trainers enough distinct pairs for a vocabulary of ~1000 ids.
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "pé", "dü"]
    words = ["".join(parts) for parts in itertools.product(syllables, repeat=3)]
    lines = [" ".join(words[i : i + 9]) for i in range(0, len(words), 9)]
    documents = ["\n".join(sentences[i : i + 12]) for i in range(0, len(sentences), 12)]
    return documents + lines + _EXTRA * 4


# --- The families ------------------------------------------------------------------------------------

_LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
]
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]

# A Llama 3.2 style template: a system header with today's date (`strftime_now`), then one header per turn.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- if strftime_now is defined %}\n"
    "        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n"
    "    {%- else %}\n"
    "        {%- set date_string = \"26 Jul 2024\" %}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "{%- for message in messages %}\n"
    "    {%- if message['role'] not in ['user', 'assistant'] %}\n"
    "        {{- raise_exception(\"Only user and assistant roles follow the system message.\") }}\n"
    "    {%- endif %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

# Qwen2.5 style: a default system prompt, ChatML turns.
QWEN2_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'system' and loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# Qwen3 style: ChatML without a default system prompt, and an `enable_thinking` switch.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}\n"
    "    {%- if message.role == 'assistant' and '</think>' in message.content %}\n"
    "        {%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}\n"
    "    {%- else %}\n"
    "        {%- set content = message.content %}\n"
    "    {%- endif %}\n"
    "    {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
)

# Gemma 3 style (text only): the system prompt joins the first user turn; roles must alternate.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{- '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {{- message['content'] | trim }}\n"
    "    {{- '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{ '<start_of_turn>model\\n' }}\n"
    "{%- endif -%}\n"
)

def make_tokenizer(family, directory, vocabulary_size=None):
    """Writes a small tokenizer of `family` into `directory` with `save_pretrained`; returns its size.

    Args:
        family: str. One of `FAMILIES`: `"gpt2"`, `"llama3"`, `"qwen2"`, `"qwen3"` (byte-level BPE),
            `"llama2"`, `"mistral"`, `"gemma3"` (SentencePiece-style BPE with byte fallback and `▁`), or
            `"bert"` (lowercase WordPiece).
        directory: str or path. The folder to write (created if needed).
        vocabulary_size: int. The number of ids, special tokens included. Defaults to
            `DEFAULT_VOCABULARY_SIZES[family]`.

    Returns:
        The vocabulary size (`len(tokenizer)` in `transformers`), equal to `vocabulary_size`.
    """
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; expected one of {FAMILIES}.")
    vocabulary_size = vocabulary_size or DEFAULT_VOCABULARY_SIZES[family]
    tokenizer = _BUILDERS[family](vocabulary_size)
    tokenizer.save_pretrained(str(directory))
    if len(tokenizer) != vocabulary_size:
        raise ValueError(
            f"The {family} fixture came out with {len(tokenizer)} ids, not {vocabulary_size}: the size is too "
            "small for the family's special tokens and alphabet, or too large for the training text. Sizes "
            "from 300 to 1200 work."
        )
    return len(tokenizer)


def _bpe_model(tokenizer):
    """The (vocab, merges) of a trained `tokenizers` BPE, as the `transformers` classes take them."""
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def _train_byte_level_bpe(size, pre_tokenizer, normalizer=None):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=size, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(training_text(), trainer=trainer)
    return _bpe_model(tokenizer)


def _train_sentencepiece_bpe(size, specials):
    """Byte-fallback BPE over `▁`-joined words: the specials, then `<0x00>`..`<0xFF>`, then the pieces."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    learned = size - len(specials) - len(_BYTE_TOKENS)
    # Rare characters stay out of the alphabet and fall back to bytes, as SentencePiece's coverage does.
    trainer = trainers.BpeTrainer(vocab_size=learned, min_frequency=1, show_progress=False,
                                  limit_alphabet=min(100, learned // 2))
    tokenizer.train_from_iterator(training_text(), trainer=trainer)
    trained, merges = _bpe_model(tokenizer)
    vocab = {token: i for i, token in enumerate(specials + _BYTE_TOKENS)}
    for token in sorted(trained, key=trained.get):
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def _gpt2(size):
    from transformers import GPT2Tokenizer

    vocab, merges = _train_byte_level_bpe(size - 1, pre_tokenizers.ByteLevel(add_prefix_space=False))
    # GPT-2's one special token is its last id (50256 in the real vocabulary).
    vocab["<|endoftext|>"] = len(vocab)
    return GPT2Tokenizer(vocab=vocab, merges=merges, model_max_length=1024)


def _llama2(size, specials=("<unk>", "<s>", "</s>"), model_max_length=4096):
    from transformers import LlamaTokenizer

    vocab, merges = _train_sentencepiece_bpe(size, list(specials))
    # BOS on every text, no EOS: what the Llama 2 checkpoints' tokenizer_config.json asks for.
    return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False, legacy=False,
                          model_max_length=model_max_length)


def _mistral(size):
    # Mistral v0.3 keeps Llama 2's layout and adds control tokens right after `</s>`.
    tokenizer = _llama2(size, specials=("<unk>", "<s>", "</s>", "[INST]", "[/INST]"), model_max_length=32768)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[INST]", "[/INST]"]})
    return tokenizer


def _llama3(size):
    from transformers import PreTrainedTokenizerFast

    pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    vocab, merges = _train_byte_level_bpe(size - len(_LLAMA3_SPECIALS), pre_tokenizer)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(_LLAMA3_SPECIALS)
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
            special_tokens=[("<|begin_of_text|>", tokenizer.token_to_id("<|begin_of_text|>"))],
        ),
    ])
    # Llama 3.x Instruct: the turn ends with <|eot_id|>, which is the end-of-sequence token.
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin_of_text|>",
                                   eos_token="<|eot_id|>", chat_template=LLAMA3_CHAT_TEMPLATE,
                                   model_max_length=131072)


def _qwen(size, thinking):
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    # Tool-call (and for Qwen3 thinking) tags are added tokens that are *not* special: decoding keeps them.
    plain = ["<tool_call>", "</tool_call>"] + (["<think>", "</think>"] if thinking else [])
    pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    vocab, merges = _train_byte_level_bpe(size - len(specials) - len(plain), pre_tokenizer, normalizers.NFC())
    for token in specials:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token=None, extra_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=QWEN3_CHAT_TEMPLATE if thinking else QWEN2_CHAT_TEMPLATE, model_max_length=131072,
    )
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in plain])
    return tokenizer


def _gemma3(size):
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[multimodal]", "<start_of_turn>", "<end_of_turn>"]
    vocab, merges = _train_sentencepiece_bpe(size, specials)
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False,
                               chat_template=GEMMA3_CHAT_TEMPLATE, model_max_length=1000000)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    return tokenizer


def _bert(size):
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=2 * size, special_tokens=specials, min_frequency=1,
                                        show_progress=False)
    tokenizer.train_from_iterator(training_text(), trainer=trainer)
    # The WordPiece trainer stops short of `vocab_size`; its first ids are a valid vocabulary of any size.
    vocab = json.loads(tokenizer.to_str())["model"]["vocab"]
    vocab = {token: i for token, i in vocab.items() if i < size}
    return BertTokenizer(vocab=vocab, do_lower_case=True, clean_up_tokenization_spaces=True, model_max_length=512)


_BUILDERS = {
    "gpt2": _gpt2,
    "llama2": _llama2,
    "llama3": _llama3,
    "mistral": _mistral,
    "qwen2": lambda size: _qwen(size, thinking=False),
    "qwen3": lambda size: _qwen(size, thinking=True),
    "gemma3": _gemma3,
    "bert": _bert,
}
