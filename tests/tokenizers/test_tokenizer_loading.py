import json

import pytest

from kerasllm.tokenizers import BytePairTokenizer, CharacterTokenizer, HuggingFaceTokenizer, load


def test_missing_folder_names_the_path(tmp_path):
    path = tmp_path / "nothing_here"
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        load(path)


def test_folder_without_tokenizer_names_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*kerasllm_tokenizer.json"):
        load(tmp_path / "empty")


def test_unknown_class_raises(tmp_path):
    (tmp_path / "kerasllm_tokenizer.json").write_text(json.dumps({"class_name": "Nope", "config": {}}))
    with pytest.raises(ValueError, match="unknown tokenizer class 'Nope'"):
        load(tmp_path)


def test_corrupt_config_raises(tmp_path):
    (tmp_path / "kerasllm_tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid kerasllm tokenizer file"):
        load(tmp_path)


def test_bare_hugging_face_file_loads(tmp_path):
    tokenizer = BytePairTokenizer.train("abc abd abe " * 10, vocabulary_size=270)
    tokenizer.tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = load(tmp_path)
    assert isinstance(loaded, HuggingFaceTokenizer)
    assert loaded.special_tokens == tokenizer.special_tokens
    # Without tokenizer_config.json nothing says which special token plays which role, as in transformers.
    assert loaded.eos_token_id is None and loaded.pad_token_id is None
    assert loaded.encode("abd abe<|endoftext|>") == tokenizer.encode("abd abe<|endoftext|>")


def test_save_load_in_fresh_process(tmp_path, run_in_fresh_process):
    text = "JULIET: O Romeo, Romeo! 世界 😀"
    byte_pair = BytePairTokenizer.train(text * 20, vocabulary_size=280)
    characters = CharacterTokenizer.train(text[:20])
    byte_pair.save(tmp_path / "bpe")
    characters.save(tmp_path / "chars")
    output = run_in_fresh_process(
        "import kerasllm.tokenizers as t\n"
        f"print(t.load({str(tmp_path / 'bpe')!r}).encode({text!r}))\n"
        f"print(t.CharacterTokenizer.load({str(tmp_path / 'chars')!r}).encode({text!r}))"
    )
    assert output.split("\n")[:2] == [str(byte_pair.encode(text)), str(characters.encode(text))]
    assert characters.unk_token_id in characters.encode(text)
