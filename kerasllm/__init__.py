"""kerasllm: Transformer language models, distillation, quantization-aware training and pruning as
plain Keras 3, on JAX, PyTorch and TensorFlow."""

__version__ = "0.1.0"

from kerasllm import data
from kerasllm import datasets
from kerasllm import layers
from kerasllm import losses
from kerasllm import metrics
from kerasllm import models
from kerasllm import optimizers
from kerasllm import tokenizers
from kerasllm import callbacks
