"""HuggingFaceTokenizer against `transformers` on small tokenizers of every supported family."""

import datetime
import json
import shutil
import sys

import numpy as np
import pytest

import hf_tokenizer_fixtures
from kerasllm.tokenizers import BytePairTokenizer, CharacterTokenizer, HuggingFaceTokenizer, Tokenizer, load
from kerasllm.tokenizers import byte_pair_tokenizer, hugging_face_tokenizer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

FAMILIES = hf_tokenizer_fixtures.FAMILIES
CHAT_FAMILIES = ("llama3", "qwen2", "qwen3", "gemma3")
MODEL_TYPES = {"gpt2": "gpt2", "llama2": "llama", "llama3": "llama", "mistral": "mistral", "qwen2": "qwen2",
               "qwen3": "qwen3", "gemma3": "gemma3_text", "bert": "bert"}
TEXTS = [
    "Hello world",
    " leading space",
    "   three leading spaces and trailing  ",
    "héllo wörld, Ωμέγα, naïve café, ÉCOLE",
    "emoji 😀🚀 and ✨ sparkles",
    "line one\nline two\n\n\tindented\r\nwindows",
    "Numbers 1234567, 3.14159 and 1e-9",
    "It's, we're; don't . Hello , world !",
    "東京 한국어 ضاد",
    "<tool_call>{\"name\": \"add\"}</tool_call> <think>plain added tokens</think>",
    "",
    " ",
]
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there! 😀"},
    {"role": "assistant", "content": "<think>Easy.</think>\n\nHello, how can I help?"},
    {"role": "user", "content": "Tell me about Ωμέγα."},
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_tokenizers")
    return {family: _make(family, root / family) for family in FAMILIES}


def _make(family, directory):
    hf_tokenizer_fixtures.make_tokenizer(family, directory)
    return directory


def _texts(tokenizer):
    # Each family's own special tokens, spelled inside text, must encode to their ids.
    first, last = tokenizer.special_tokens[0], tokenizer.special_tokens[-1]
    return TEXTS + [f"{first}Hi there{last} and{first}\nbye", " ".join(tokenizer.special_tokens)]


def _assert_same_as_transformers(tokenizer, reference, texts):
    for text in texts:
        for add in (True, False):
            ids = tokenizer.encode(text, add_special_tokens=add)
            assert ids == reference(text, add_special_tokens=add)["input_ids"], (text, add)
            for skip in (True, False):
                assert tokenizer.decode(ids, skip_special_tokens=skip) == reference.decode(
                    ids, skip_special_tokens=skip), (text, add, skip)
    assert tokenizer.encode_batch(texts) == reference(texts)["input_ids"]
    # Any ids, also ones no text encodes to (lone byte-fallback pieces, specials in the middle).
    for ids in np.random.default_rng(0).integers(0, tokenizer.vocabulary_size, size=(4, 30)).tolist():
        for skip in (True, False):
            assert tokenizer.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_decode_match_transformers(folders, family):
    tokenizer = load(folders[family])
    assert isinstance(tokenizer, HuggingFaceTokenizer)
    reference = transformers.AutoTokenizer.from_pretrained(folders[family])
    _assert_same_as_transformers(tokenizer, reference, _texts(tokenizer))


@pytest.mark.parametrize("family", FAMILIES)
def test_roles_and_vocabulary_match_transformers(folders, family):
    tokenizer = load(folders[family])
    reference = transformers.AutoTokenizer.from_pretrained(folders[family])
    assert tokenizer.vocabulary_size == len(reference)
    for role in ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token", "cls_token", "sep_token"):
        assert getattr(tokenizer, role) == getattr(reference, role), role
        assert getattr(tokenizer, f"{role}_id") == getattr(reference, f"{role}_id"), role
    assert set(reference.all_special_tokens) <= set(tokenizer.special_tokens)


# What each family adds around a text by default: the first and last ids of `encode("Hi")`.
EXPECTED_ENDS = {
    "gpt2": (None, None), "qwen2": (None, None), "qwen3": (None, None),
    "llama2": ("<s>", None), "mistral": ("<s>", None), "llama3": ("<|begin_of_text|>", None),
    "gemma3": ("<bos>", None), "bert": ("[CLS]", "[SEP]"),
}
EXPECTED_ROLES = {
    "gpt2": ("<|endoftext|>", "<|endoftext|>", None), "qwen2": (None, "<|im_end|>", "<|endoftext|>"),
    "qwen3": (None, "<|im_end|>", "<|endoftext|>"), "llama2": ("<s>", "</s>", None),
    "mistral": ("<s>", "</s>", None), "llama3": ("<|begin_of_text|>", "<|eot_id|>", None),
    "gemma3": ("<bos>", "<eos>", "<pad>"), "bert": (None, None, "[PAD]"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_adds_its_own_special_tokens(folders, family):
    tokenizer = load(folders[family])
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == EXPECTED_ROLES[family]
    plain = tokenizer.encode("Hi", add_special_tokens=False)
    ids = tokenizer.encode("Hi")
    first, last = EXPECTED_ENDS[family]
    expected = [tokenizer.token_to_id(first)] if first else []
    expected += plain + ([tokenizer.token_to_id(last)] if last else [])
    assert ids == expected
    assert tokenizer.decode(ids) == tokenizer.decode(plain) == ("hi" if family == "bert" else "Hi")


@pytest.mark.parametrize("family", FAMILIES)
def test_model_folder_with_config_json_matches_transformers(folders, family, tmp_path):
    # In a model folder, transformers also reads config.json, whose model type can change the tokenizer
    # class it picks (Qwen2's is forced, Mistral's falls back to the file as written).
    folder = shutil.copytree(folders[family], tmp_path / family)
    (folder / "config.json").write_text(json.dumps({"model_type": MODEL_TYPES[family]}))
    tokenizer = load(folder)
    _assert_same_as_transformers(tokenizer, transformers.AutoTokenizer.from_pretrained(folder), _texts(tokenizer))


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip(folders, family, tmp_path):
    tokenizer = load(folders[family])
    tokenizer.save(tmp_path / "saved")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "kerasllm_tokenizer.json"):
        assert (tmp_path / "saved" / name).is_file(), name
    for loaded in (load(tmp_path / "saved"), HuggingFaceTokenizer.load(tmp_path / "saved")):
        assert isinstance(loaded, HuggingFaceTokenizer)
        assert loaded.get_config() == tokenizer.get_config()
        assert loaded.special_tokens == tokenizer.special_tokens
        assert loaded.encode_batch(_texts(tokenizer)) == tokenizer.encode_batch(_texts(tokenizer))
    # transformers reads the saved folder as it read the original.
    original = transformers.AutoTokenizer.from_pretrained(folders[family])
    saved = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert saved.chat_template == original.chat_template
    assert saved.special_tokens_map == original.special_tokens_map
    _assert_same_as_transformers(tokenizer, saved, _texts(tokenizer))


def test_export_writes_only_the_hugging_face_files(folders, tmp_path):
    tokenizer = load(folders["llama3"])
    tokenizer.export_to_transformers(tmp_path / "exported", model_max_length=2048)
    assert not (tmp_path / "exported" / "kerasllm_tokenizer.json").exists()
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path / "exported")
    assert reference.model_max_length == 2048
    _assert_same_as_transformers(tokenizer, reference, _texts(tokenizer))
    loaded = load(tmp_path / "exported")
    assert loaded.model_max_length == 2048 and loaded.chat_template == tokenizer.chat_template


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_chat_template_matches_transformers(folders, family):
    tokenizer = load(folders[family])
    reference = transformers.AutoTokenizer.from_pretrained(folders[family])
    kwargs = {"enable_thinking": False} if family == "qwen3" else {}
    for messages in (MESSAGES, MESSAGES[1:2]):
        for prompt in (True, False):
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=False, **kwargs)
            assert text == reference.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=False,
                                                         **kwargs)
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=prompt, **kwargs)
            assert ids == reference.apply_chat_template(messages, add_generation_prompt=prompt, return_dict=False,
                                                        **kwargs)
            assert ids == tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.chat_template == reference.chat_template


def test_chat_template_helpers_and_errors(folders):
    jinja2 = pytest.importorskip("jinja2")
    llama3 = load(folders["llama3"])
    # The template dates the system header with `strftime_now`, unless a `date_string` is passed.
    today = datetime.date.today().strftime("%d %b %Y")
    assert f"Today Date: {today}" in llama3.apply_chat_template(MESSAGES[1:2], tokenize=False)
    assert "Today Date: 01 Jan 2020" in llama3.apply_chat_template(MESSAGES[1:2], tokenize=False,
                                                                   date_string="01 Jan 2020")
    gemma = load(folders["gemma3"])
    reference = transformers.AutoTokenizer.from_pretrained(folders["gemma3"])
    not_alternating = [MESSAGES[1], MESSAGES[1]]
    with pytest.raises(jinja2.exceptions.TemplateError, match="must alternate") as ours:
        gemma.apply_chat_template(not_alternating)
    with pytest.raises(jinja2.exceptions.TemplateError) as theirs:
        reference.apply_chat_template(not_alternating)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match="no chat template"):
        load(folders["gpt2"]).apply_chat_template(MESSAGES)
    with pytest.raises(ValueError, match="list of dicts"):
        gemma.apply_chat_template("Hi")


def test_missing_jinja2_names_the_install_command(folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "jinja2", None)
    with pytest.raises(ImportError, match="pip install jinja2"):
        load(folders["qwen2"]).apply_chat_template(MESSAGES, chat_template="{{ messages[0].content }} (no jinja2)")


def test_named_chat_templates_round_trip(folders, tmp_path):
    base = load(folders["qwen2"])
    templates = {
        "default": base.chat_template,
        "tool_use": "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}{{ messages[-1]['content'] }}",
    }
    tokenizer = HuggingFaceTokenizer(base.tokenizer, **{**base.get_config(), "chat_template": templates})
    tokenizer.save(tmp_path / "named")
    assert load(tmp_path / "named").chat_template == templates
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path / "named")
    assert reference.chat_template == templates
    tools = [{"type": "function", "function": {"name": "add", "description": "Adds <a> & <b>."}}]
    for options in ({}, {"tools": tools}, {"chat_template": "tool_use", "tools": tools}):
        assert tokenizer.apply_chat_template(MESSAGES, tokenize=False, **options) == reference.apply_chat_template(
            MESSAGES, tokenize=False, **options)
    assert '"Adds <a> & <b>."' in tokenizer.apply_chat_template(MESSAGES, tokenize=False, tools=tools)


@pytest.mark.parametrize("family", ("gpt2", "llama3", "qwen2"))
def test_long_texts_in_pieces_equal_whole_with_one_bos(folders, family, monkeypatch):
    tokenizer = load(folders[family])
    assert tokenizer._cut_safe
    text = "".join(f"Line {i}: héllo 😀 it's.\n  indented {i}\n\nx\ny.\n" for i in range(60))
    whole = tokenizer.tokenizer.encode(text).ids
    monkeypatch.setattr(byte_pair_tokenizer, "_CHUNK_CHARACTERS", 40)
    monkeypatch.setattr(hugging_face_tokenizer, "_CHUNK_CHARACTERS", 40)
    assert len(byte_pair_tokenizer._safe_pieces(text)) > 30
    assert tokenizer.encode(text) == whole
    assert tokenizer.encode_batch([text, "short", text], add_special_tokens=False)[2] == tokenizer.tokenizer.encode(
        text, add_special_tokens=False).ids
    if family == "llama3":
        ids = tokenizer.encode(text)
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


@pytest.mark.parametrize("family", ("llama2", "gemma3", "bert"))
def test_sentencepiece_and_wordpiece_families_are_never_cut(folders, family):
    # A ▁-joined or lowercased pipeline is not known to cut at newlines, so long texts go in whole.
    assert not load(folders[family])._cut_safe


def test_roles_as_added_token_dicts_and_special_tokens_map(folders, tmp_path):
    folder = shutil.copytree(folders["llama2"], tmp_path / "llama2")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["eos_token"] = {"__type": "AddedToken", "content": "</s>", "lstrip": False, "normalized": False,
                           "rstrip": False, "single_word": False, "special": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").write_text(json.dumps({"pad_token": {"content": "<unk>"}}))
    tokenizer = load(folder)
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    assert (tokenizer.eos_token, tokenizer.pad_token) == (reference.eos_token, reference.pad_token) == ("</s>", "<unk>")


def test_tokenizer_json_quirks_are_handled_as_in_transformers(folders, tmp_path):
    # A role token known only to the model's vocabulary (not an added token), and truncation and padding
    # saved in tokenizer.json: transformers makes the token special and encodes without truncating.
    folder = shutil.copytree(folders["gpt2"], tmp_path / "gpt2")
    data = json.loads((folder / "tokenizer.json").read_text())
    data["added_tokens"] = []
    data["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
    data["padding"] = {"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
                       "pad_type_id": 0, "pad_token": "!"}
    (folder / "tokenizer.json").write_text(json.dumps(data))
    tokenizer = load(folder)
    assert tokenizer.special_tokens == ["<|endoftext|>"]
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    _assert_same_as_transformers(tokenizer, reference, _texts(tokenizer))
    assert len(tokenizer.encode(TEXTS[2])) > 4


def test_the_given_pipeline_is_not_changed(folders):
    from tokenizers import Tokenizer as PipelineTokenizer

    pipeline = PipelineTokenizer.from_file(str(folders["llama2"] / "tokenizer.json"))
    pipeline.enable_truncation(3)
    tokenizer = HuggingFaceTokenizer(pipeline, bos_token="<s>", eos_token="</s>", tokenizer_config={
        "extra_special_tokens": ["<0x41>"]})
    assert pipeline.truncation is not None
    assert "<0x41>" not in [token.content for token in pipeline.get_added_tokens_decoder().values()]
    assert tokenizer.token_to_id("<0x41>") in tokenizer.special_token_ids
    assert len(tokenizer.encode("the cat reads a book")) > 3


@pytest.mark.parametrize("family, model_config, tokenizer_config", [
    ("gpt2", {"model_type": "gpt2"}, {"model_max_length": 1024}),
    ("bert", {"model_type": "bert"}, {"do_lower_case": True, "model_max_length": 512}),
])
def test_roles_left_out_take_the_transformers_class_defaults(folders, tmp_path, family, model_config,
                                                             tokenizer_config):
    # Older checkpoints (openai-community/gpt2, bert-base-uncased) name no roles in tokenizer_config.json.
    folder = tmp_path / family
    folder.mkdir()
    shutil.copy(folders[family] / "tokenizer.json", folder)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "config.json").write_text(json.dumps(model_config))
    tokenizer = load(folder)
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    assert tokenizer.roles == {role: getattr(reference, role) for role in tokenizer.roles}
    assert tokenizer.eos_token_id is not None or family == "bert"
    assert tokenizer.model_max_length == tokenizer_config["model_max_length"]
    _assert_same_as_transformers(tokenizer, reference, _texts(tokenizer))


TRAINING_TEXT = "ROMEO: But soft, what light through yonder window breaks?\nJULIET: O Romeo! 😀 é\n" * 30


def test_export_byte_pair_tokenizer(tmp_path):
    tokenizer = BytePairTokenizer.train(TRAINING_TEXT, vocabulary_size=300)
    tokenizer.export_to_transformers(tmp_path / "bpe", model_max_length=256)
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path / "bpe")
    texts = TEXTS + ["ROMEO<|endoftext|>JULIET<|pad|> <|mask|>", TRAINING_TEXT]
    for text in texts:
        ids = tokenizer.encode(text)
        assert reference(text)["input_ids"] == ids
        for skip in (True, False):
            assert reference.decode(ids, skip_special_tokens=skip) == tokenizer.decode(ids, skip_special_tokens=skip)
    assert (reference.eos_token_id, reference.pad_token_id, reference.mask_token_id) == (1, 0, 2)
    assert (reference.bos_token, reference.unk_token, reference.model_max_length) == (None, None, 256)
    assert len(reference) == tokenizer.vocabulary_size
    loaded = load(tmp_path / "bpe")
    assert isinstance(loaded, HuggingFaceTokenizer) and loaded.model_max_length == 256
    assert loaded.encode_batch(texts) == tokenizer.encode_batch(texts)
    assert (loaded.eos_token_id, loaded.pad_token_id, loaded.mask_token_id, loaded.bos_token_id) == (1, 0, 2, None)
    # In an exported model folder: config.json names a model type whose own tokenizer class would differ.
    for model_type in ("gpt2", "llama"):
        (tmp_path / "bpe" / "config.json").write_text(json.dumps({"model_type": model_type}))
        reference = transformers.AutoTokenizer.from_pretrained(tmp_path / "bpe")
        assert reference(texts)["input_ids"] == tokenizer.encode_batch(texts)


@pytest.mark.parametrize("unk", [True, False])
def test_export_character_tokenizer(tmp_path, unk):
    specials = ("<|pad|>", "<|endoftext|>", "<|mask|>") + (("<|unk|>",) if unk else ())
    tokenizer = CharacterTokenizer.train(TRAINING_TEXT + " \t\r\n<|>\u0301", special_tokens=specials)
    tokenizer.export_to_transformers(tmp_path / "chars")
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path / "chars")
    texts = ["ROMEO: But soft!", "  light\n\twindow\r\n", "O Romeo<|endoftext|>😀é<|mask|><|pad|>", "", "<|end",
             "e\u0301 O"]
    texts += ["Zebra Ωμέγα 東"] if unk else []
    for text in texts:
        ids = tokenizer.encode(text)
        assert reference(text)["input_ids"] == ids, text
        for skip in (True, False):
            assert reference.decode(ids, skip_special_tokens=skip) == tokenizer.decode(ids, skip_special_tokens=skip)
    assert (reference.unk_token_id, reference.eos_token_id) == (tokenizer.unk_token_id, tokenizer.eos_token_id)
    assert load(tmp_path / "chars").encode_batch(texts) == tokenizer.encode_batch(texts)
    if not unk:
        with pytest.raises(ValueError, match="outside the vocabulary"):
            tokenizer.encode("Zebra")
        with pytest.raises(Exception, match="(?i)unk|missing"):
            reference("Zebra")


def test_base_class_cannot_export(tmp_path):
    with pytest.raises(NotImplementedError, match="cannot be exported"):
        Tokenizer().export_to_transformers(tmp_path)


def test_add_special_tokens_is_accepted_by_every_tokenizer():
    for tokenizer in (BytePairTokenizer.train(TRAINING_TEXT, vocabulary_size=280), CharacterTokenizer.train("abc")):
        assert tokenizer.encode("abc", add_special_tokens=False) == tokenizer.encode("abc")
        assert tokenizer.encode_batch(["ab", "c"], add_special_tokens=False) == tokenizer.encode_batch(["ab", "c"])
        assert tokenizer.bos_token_id is None


def test_sentencepiece_only_folder_explains_the_conversion(folders, tmp_path):
    folder = tmp_path / "spm"
    folder.mkdir()
    shutil.copy(folders["llama2"] / "tokenizer_config.json", folder)
    (folder / "tokenizer.model").write_bytes(b"\x0a\x05hello")
    with pytest.raises(FileNotFoundError, match=r"(?s)no `tokenizer.json`.*tokenizer.model.*save_pretrained"):
        load(folder)


def test_corrupt_files_raise_naming_the_file(folders, tmp_path):
    folder = shutil.copytree(folders["gpt2"], tmp_path / "gpt2")
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": ')
    with pytest.raises(ValueError, match=r"tokenizer.json.*is not a valid `tokenizer.json`"):
        load(folder)
    folder = shutil.copytree(folders["gpt2"], tmp_path / "gpt2_config")
    (folder / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"tokenizer_config.json.*not valid JSON"):
        load(folder)


def test_role_token_missing_from_vocabulary_raises(folders, tmp_path):
    folder = shutil.copytree(folders["qwen2"], tmp_path / "qwen2")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["eos_token"] = "<|nope|>"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"qwen2.*\['<\|nope\|>'\] are not in the tokenizer's vocabulary.*eos_token"):
        load(folder)


def test_bad_inputs_raise(folders):
    tokenizer = load(folders["llama3"])
    with pytest.raises(ValueError, match="str"):
        tokenizer.encode(["not", "a", "string"])
    with pytest.raises(ValueError, match="single string"):
        tokenizer.encode_batch("one string")
    with pytest.raises(ValueError, match="vocabulary has only"):
        tokenizer.decode([tokenizer.vocabulary_size])
    with pytest.raises(ValueError, match="tokenizers.Tokenizer"):
        HuggingFaceTokenizer({"not": "a tokenizer"})
