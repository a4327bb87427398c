"""kerasllm: Transformer language models, distillation, quantization-aware training and pruning as
plain Keras 3, on JAX, PyTorch and TensorFlow."""

__version__ = "0.1.0"

import sys as _sys

from kerasllm import backend_selection as _backend_selection

if "keras" not in _sys.modules:
    # Before the first Keras import: Keras's default backend may not be installed (e.g. `pip install
    # kerasllm[jax]`), and then `import keras` would fail.
    _backend_selection.ensure_installed_backend()

from kerasllm import data
from kerasllm import datasets
from kerasllm import layers
from kerasllm import losses
from kerasllm import metrics
from kerasllm import models
from kerasllm import optimizers
from kerasllm import tokenizers
from kerasllm import utils
from kerasllm import callbacks
from kerasllm import quantization
from kerasllm import distillation
from kerasllm import distribution
from kerasllm import tuning  # imports KerasTuner (optional) only when a search runs
