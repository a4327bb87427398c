import numpy as np
import pytest

from kerasllm.tokenizers import CharacterTokenizer, load

TEXT = "To be, or not to be: that is the question.\nÆther 😀"


@pytest.fixture(scope="module")
def tokenizer():
    return CharacterTokenizer.train(TEXT)


def test_vocabulary_is_specials_then_sorted_characters(tokenizer):
    specials = ["<|pad|>", "<|endoftext|>", "<|mask|>", "<|unk|>"]
    assert tokenizer.vocabulary == specials + sorted(set(TEXT))
    assert tokenizer.vocabulary_size == 4 + len(set(TEXT))
    roles = (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.mask_token_id, tokenizer.unk_token_id)
    assert roles == (0, 1, 2, 3)


def test_encode_matches_numpy_reference(tokenizer):
    reference = [tokenizer.vocabulary.index(c) for c in TEXT]
    assert tokenizer.encode(TEXT) == reference
    assert tokenizer.decode(np.array(reference)) == TEXT


def test_unknown_characters_map_to_unk(tokenizer):
    ids = tokenizer.encode("toZ!")
    assert ids[2] == ids[3] == tokenizer.unk_token_id
    assert tokenizer.decode(ids, skip_special_tokens=False) == "to<|unk|><|unk|>"


def test_special_tokens_in_text(tokenizer):
    ids = tokenizer.encode("be<|endoftext|>to")
    assert ids == tokenizer.encode("be") + [1] + tokenizer.encode("to")
    assert tokenizer.decode(ids) == "beto"


def test_no_unk_token_raises_on_unknown_characters():
    tokenizer = CharacterTokenizer.train("abc", special_tokens=("<|pad|>",))
    assert tokenizer.unk_token_id is None and tokenizer.eos_token_id is None
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.encode("abz")


def test_from_vocabulary_list():
    tokenizer = CharacterTokenizer(list("cab"))
    assert tokenizer.vocabulary_size == 7
    assert tokenizer.encode("abc") == [5, 6, 4]
    with pytest.raises(ValueError, match="single characters"):
        CharacterTokenizer(["ab", "c"])
    with pytest.raises(ValueError, match="more than once"):
        CharacterTokenizer(["a", "a"])


def test_save_load_identical(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "chars")
    loaded = load(tmp_path / "chars")
    assert isinstance(loaded, CharacterTokenizer)
    assert loaded.get_config() == tokenizer.get_config()
    assert loaded.encode(TEXT + "Z") == tokenizer.encode(TEXT + "Z")
    assert CharacterTokenizer.load(tmp_path / "chars").vocabulary == tokenizer.vocabulary


def test_bad_inputs_raise(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        CharacterTokenizer.train("")
    with pytest.raises(ValueError, match="not a str"):
        CharacterTokenizer("abc")
    with pytest.raises(ValueError, match="vocabulary has only"):
        tokenizer.decode([0, 1000])
    with pytest.raises(ValueError, match="rank"):
        tokenizer.decode([[4, 5]])
    with pytest.raises(ValueError, match="not one of `special_tokens`"):
        CharacterTokenizer(list("ab"), special_tokens=("<|pad|>",))
