"""Train a small GPT-2 style language model on Shakespeare with model.fit(), then sample from it.

    KERAS_BACKEND=jax python examples/train_shakespeare.py            # or torch / tensorflow
    KERAS_BACKEND=jax python examples/train_shakespeare.py --preset tiny-llama --epochs 2

The whole script is the user-facing API: tokenizer, data, model, compile, fit, generate, save, load.
"""

import argparse

import keras

import kerasllm

parser = argparse.ArgumentParser()
parser.add_argument("--preset", default="tiny")
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--sequence-length", type=int, default=128)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--learning-rate", type=float, default=2e-3)
parser.add_argument("--output", default="shakespeare.keras")
args = parser.parse_args()

text = kerasllm.datasets.shakespeare()
tokenizer = kerasllm.tokenizers.BytePairTokenizer.train(text, vocabulary_size=2048)
train, val = kerasllm.data.language_modeling_splits(
    text, tokenizer, sequence_length=args.sequence_length, batch_size=args.batch_size
)
model = kerasllm.models.CausalLM.from_preset(args.preset, vocabulary_size=tokenizer.vocabulary_size)
optimizer = kerasllm.optimizers.create_optimizer(args.learning_rate, total_steps=args.epochs * len(train))
model.compile(optimizer=optimizer, loss=kerasllm.losses.CausalLMLoss(), metrics=[kerasllm.metrics.Perplexity()])
model.fit(train, validation_data=val, epochs=args.epochs)

print(model.generate("ROMEO:", tokenizer=tokenizer, max_new_tokens=80, temperature=0.8, top_k=40, seed=0))
model.save(args.output)
tokenizer.save(args.output + ".tokenizer")
restored = keras.saving.load_model(args.output)
print("saved and reloaded:", args.output, f"({restored.count_params():,} parameters)")
