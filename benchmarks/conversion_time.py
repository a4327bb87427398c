"""Wall time of converting a model in place: int8 quantization and a LoRA merge, with and without
`kerasllm.utils.collection.collect_once`.

Run (from the repository root; one backend and one path per process, since the cost depends on what the
process has allocated):

    KERAS_BACKEND=jax python benchmarks/conversion_time.py --path kerasllm   # kerasllm.quantization.quantize
    KERAS_BACKEND=jax python benchmarks/conversion_time.py --path keras      # model.quantize on the same layers

Keras's `Layer.__delattr__` runs a full `gc.collect()` for each variable it deletes: one per quantized
kernel, two per merged LoRA layer. `--path keras` runs the same kerasllm functions with `collect_once`
replaced by a block that does nothing: what kerasllm did before it, each of Keras's collections in full.
"""

import argparse
import contextlib
import os
import sys
import time

import numpy as np

# Python puts this folder first on sys.path, and JAX tries `from compression import zstd` (Python
# 3.14's package) when it starts: that would run benchmarks/compression.py halfway through importing Keras.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [path for path in sys.path if os.path.abspath(path or ".") != _HERE]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", choices=("kerasllm", "keras"), default="kerasllm")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--vocabulary-size", type=int, default=2048)
    args = parser.parse_args()

    import keras

    import kerasllm
    from kerasllm.models import language_model, lora
    from kerasllm.quantization.quantize import select_layers

    if args.path == "keras":
        # The module, not the function `kerasllm.quantization.quantize` that shadows its name.
        quantize_module = sys.modules["kerasllm.quantization.quantize"]
        lora.collect_once = quantize_module.collect_once = contextlib.nullcontext
        language_model.collect_once = contextlib.nullcontext  # LanguageModel.quantize

    def build():
        model = kerasllm.models.CausalLM.from_preset(args.preset, vocabulary_size=args.vocabulary_size)
        model(np.zeros((1, 16), "int32"))
        return model

    model = build()
    layers = select_layers(model)
    start = time.perf_counter()
    kerasllm.quantization.quantize(model, "int8")
    quantize_s = time.perf_counter() - start

    model = build()
    model.enable_lora(rank=8)
    merged = len(lora.lora_layers(model))
    start = time.perf_counter()
    model.merge_lora()
    merge_s = time.perf_counter() - start
    print(f"{keras.backend.backend()} | preset {args.preset} | path {args.path} | int8 quantize of "
          f"{len(layers)} layers: {quantize_s:.2f} s | LoRA merge of {merged} layers: {merge_s:.2f} s")


if __name__ == "__main__":
    main()
