"""Does GPTQ calibrate? Logit error of round-to-nearest int4, Keras 3.15's GPTQ and kerasllm's GPTQ.

Run (from the repository root, a few minutes on CPU):

    KERAS_BACKEND=jax python benchmarks/gptq_calibration.py

A 2-block `CausalLM` (128 wide, character tokenizer) is trained for `STEPS` steps on the first
`CHARS` characters of the built-in corpus, then quantized four ways with groups of `GROUP_SIZE`:

    RTN int4                    `kerasllm.quantization.quantize(model, "int4")` (round-to-nearest)
    Keras GPTQ                  Keras 3.15's `model.quantize("gptq", config=GPTQConfig(...))` as is
    Keras GPTQ, hooks running   the same, with the layers called through `call` while uncalibrated,
                                so its Hessian hooks see the calibration inputs
    kerasllm GPTQ               `kerasllm.quantization.quantize(model, "gptq", ...)`

GPTQ variants calibrate on `WINDOWS` windows of `LENGTH` characters. Reported: the mean absolute
difference of each model's logits from the float model's, on the calibration windows and on as many
held-out windows, and the validation perplexity.
"""

import os
import sys
import types

# Benchmarks drop their own folder from the path (compression.py shadows a stdlib package).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasllm  # noqa: E402
from kerasllm.cli.quantize import evaluate, fine_tune  # noqa: E402

CHARS, LENGTH, STEPS, GROUP_SIZE, WINDOWS, SEED = 400_000, 64, 150, 32, 64, 0


def keras_gptq(model, windows, hooks_running):
    backbone = model.backbone

    def embed(token_ids):
        hidden = backbone.token_embedding(token_ids)
        return hidden + backbone.position_embedding(hidden, start_index=0)

    class Tokens:  # Keras checks a tokenizer is set; token ids never need it
        def tokenize(self, text):
            return np.asarray(text)

    layers = kerasllm.quantization.pruning.prunable_layers(model)
    if hooks_running:
        def quantized_call(layer, *args, **kwargs):
            if not getattr(layer, "is_gptq_calibrated", False):
                return layer.call(*args, **kwargs)
            return type(layer).quantized_call(layer, *args, **kwargs)
        for layer in layers:
            object.__setattr__(layer, "quantized_call", types.MethodType(quantized_call, layer))
    config = keras.quantizers.GPTQConfig(
        dataset=list(windows), tokenizer=Tokens(), weight_bits=4, num_samples=len(windows),
        sequence_length=LENGTH, group_size=GROUP_SIZE,
        quantization_layer_structure={"pre_block_layers": [embed], "sequential_blocks": list(backbone.blocks)})
    chosen = {id(layer) for layer in layers}
    # keras.Model's own method: a kerasllm model's `quantize` refuses Keras's GPTQ for this very reason.
    keras.Model.quantize(model, "gptq", config=config, filters=lambda layer: id(layer) in chosen)
    for layer in layers:
        layer.__dict__.pop("quantized_call", None)


def main():
    print(f"kerasllm {kerasllm.__version__} | Keras {keras.__version__} | backend {keras.backend.backend()} | "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    keras.utils.set_random_seed(SEED)
    text = kerasllm.datasets.shakespeare()[:CHARS]
    tokenizer = kerasllm.tokenizers.CharacterTokenizer.train(text)
    train, validation = kerasllm.data.language_modeling_splits(
        text, tokenizer, sequence_length=LENGTH, batch_size=32, seed=SEED)
    model = kerasllm.models.CausalLM(vocabulary_size=tokenizer.vocabulary_size, num_layers=2, num_heads=4,
                                     hidden_dim=128, intermediate_dim=512, max_sequence_length=LENGTH)
    fine_tune(model, train, STEPS, 3e-3)
    path = "/tmp/bench_gptq_float.keras"
    model.save(path)
    rows = np.concatenate([train[index][0] for index in range(2 * WINDOWS // 32 + 1)])
    calibration, held_out = rows[:WINDOWS], rows[WINDOWS:2 * WINDOWS]

    def logits(model, x):
        return keras.ops.convert_to_numpy(model.predict(x, batch_size=16, verbose=0))

    reference = {"calibration": logits(model, calibration), "held-out": logits(model, held_out)}
    variants = {
        "float": lambda m: None,
        "RTN int4": lambda m: kerasllm.quantization.quantize(m, "int4", group_size=GROUP_SIZE),
        "Keras GPTQ": lambda m: keras_gptq(m, calibration, hooks_running=False),
        "Keras GPTQ, hooks running": lambda m: keras_gptq(m, calibration, hooks_running=True),
        "kerasllm GPTQ": lambda m: kerasllm.quantization.quantize(
            m, "gptq", calibration_data=list(calibration), group_size=GROUP_SIZE, num_samples=WINDOWS,
            sequence_length=LENGTH),
    }
    print(f"\n{'variant':<28}{'logit err (calibration)':>25}{'logit err (held-out)':>22}{'val ppl':>10}")
    for name, apply in variants.items():
        quantized = keras.saving.load_model(path)
        apply(quantized)
        errors = [np.mean(np.abs(logits(quantized, x) - reference[split]))
                  for split, x in (("calibration", calibration), ("held-out", held_out))]
        perplexity = evaluate(quantized, validation)["perplexity"]
        print(f"{name:<28}{errors[0]:>25.5f}{errors[1]:>22.5f}{perplexity:>10.3f}", flush=True)


if __name__ == "__main__":
    main()
