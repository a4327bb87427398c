import numpy as np
import pytest

from kerasllm.datasets import shakespeare, shakespeare_plays
from kerasllm.tokenizers import BytePairTokenizer, CharacterTokenizer, load
from kerasllm.tokenizers import byte_pair_tokenizer

TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n"
) * 20


@pytest.fixture(scope="module")
def tokenizer():
    return BytePairTokenizer.train(TEXT, vocabulary_size=300)


def test_special_token_ids(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.mask_token_id) == (0, 1, 2)
    assert tokenizer.unk_token_id is None
    assert tokenizer.special_tokens == ["<|pad|>", "<|endoftext|>", "<|mask|>"]
    assert tokenizer.special_token_ids == [0, 1, 2]


def test_vocabulary_grows_with_merges_up_to_the_limit(tokenizer):
    assert 259 < tokenizer.vocabulary_size <= 300
    # Merges make the ids shorter than the bytes.
    assert len(tokenizer.encode(TEXT)) < 0.6 * len(TEXT.encode("utf-8"))


@pytest.mark.parametrize(
    "text",
    ["Wherefore art thou Romeo?", "  leading and trailing  \n\n", "héllo wörld, 世界 😀 Ωμέγα", "", "\t\r\n"],
)
def test_round_trip_any_string(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tokenizer.vocabulary_size for i in ids)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(np.array(ids, dtype=np.int64)) == text
    assert tokenizer.decode(tuple(ids)) == text


def test_round_trip_corpus_sample(tokenizer):
    sample = shakespeare_plays("tragedies")[0].text[:20000]
    assert tokenizer.decode(tokenizer.encode(sample)) == sample


def test_special_tokens_in_text_and_skipping(tokenizer):
    ids = tokenizer.encode("Romeo<|endoftext|>Juliet")
    assert tokenizer.eos_token_id in ids
    assert tokenizer.decode(ids) == "RomeoJuliet"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "Romeo<|endoftext|>Juliet"


def test_batch_matches_single(tokenizer):
    texts = ["Romeo", "", "Juliet is the sun."]
    batch = tokenizer.encode_batch(texts)
    assert batch == [tokenizer.encode(t) for t in texts]
    assert tokenizer.decode_batch(batch) == texts


def test_long_text_in_pieces_equals_whole(monkeypatch):
    # Indented lines and trailing spaces make whitespace pre-tokens that a careless cut would split.
    text = "".join(f"line {i}  \n    indented {i}\n\n  x\ny\n" for i in range(40))
    tokenizer = BytePairTokenizer.train(text, vocabulary_size=320)
    monkeypatch.setattr(byte_pair_tokenizer, "_CHUNK_CHARACTERS", 20)
    assert len(byte_pair_tokenizer._safe_pieces(text)) > 20
    assert tokenizer.encode(text) == tokenizer.tokenizer.encode(text).ids
    assert tokenizer.encode_batch([text, "short"])[0] == tokenizer.tokenizer.encode(text).ids


def test_train_accepts_iterable_of_documents():
    tokenizer = BytePairTokenizer.train(iter(["abc abc abc", "abd abd"]), vocabulary_size=270)
    assert tokenizer.decode(tokenizer.encode("abd abc")) == "abd abc"


def test_save_load_identical(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "bpe")
    assert (tmp_path / "bpe" / "tokenizer.json").is_file()
    assert (tmp_path / "bpe" / "kerasllm_tokenizer.json").is_file()
    for loaded in (load(tmp_path / "bpe"), BytePairTokenizer.load(str(tmp_path / "bpe"))):
        assert isinstance(loaded, BytePairTokenizer)
        assert loaded.get_config() == tokenizer.get_config()
        assert loaded.vocabulary_size == tokenizer.vocabulary_size
        assert loaded.encode(TEXT + " 😀") == tokenizer.encode(TEXT + " 😀")
    with pytest.raises(ValueError, match="CharacterTokenizer"):
        CharacterTokenizer.load(tmp_path / "bpe")


@pytest.mark.parametrize("text", ["", [], ["", ""]])
def test_empty_text_raises(text):
    with pytest.raises(ValueError, match="empty"):
        BytePairTokenizer.train(text)


def test_too_small_vocabulary_raises():
    with pytest.raises(ValueError, match="at least 259"):
        BytePairTokenizer.train(TEXT, vocabulary_size=100)


def test_bad_inputs_raise(tokenizer):
    with pytest.raises(ValueError, match="str"):
        tokenizer.encode(["not", "a", "string"])
    with pytest.raises(ValueError, match="single string"):
        tokenizer.encode_batch("one string")
    with pytest.raises(ValueError, match="vocabulary has only"):
        tokenizer.decode([tokenizer.vocabulary_size])
    with pytest.raises(ValueError, match="negative"):
        tokenizer.decode([-1])
    with pytest.raises(ValueError, match="dtype"):
        tokenizer.decode([1.5])


def test_full_corpus_vocabulary_2048():
    text = shakespeare()
    tokenizer = BytePairTokenizer.train(text, vocabulary_size=2048)
    assert tokenizer.vocabulary_size == 2048
    sample = text[-300_000:]  # long enough to be encoded in pieces
    ids = tokenizer.encode(sample)
    assert len(ids) < len(sample) / 2.5
    assert tokenizer.decode(ids) == sample
