"""Data and model parallelism through `keras.distribution` (JAX backend); data parallelism on TensorFlow
(`tf.distribute`) and torch (`torch.distributed`)."""

from kerasllm.distribution.layout_map import DEFAULT_MAX_REPLICATED_SIZE
from kerasllm.distribution.layout_map import auto_layout_map
from kerasllm.distribution.layout_map import check_layout_map
from kerasllm.distribution.layout_map import get_layout_map
from kerasllm.distribution.setup import check_batch_size
from kerasllm.distribution.setup import data_parallel
from kerasllm.distribution.setup import model_parallel
from kerasllm.distribution.mirrored import mirrored_strategy
from kerasllm.distribution.torch_data_parallel import TorchDataParallel
from kerasllm.distribution.torch_data_parallel import init_process_group
from kerasllm.distribution.torch_data_parallel import torch_data_parallel

__all__ = [
    "DEFAULT_MAX_REPLICATED_SIZE",
    "get_layout_map",
    "auto_layout_map",
    "check_layout_map",
    "data_parallel",
    "model_parallel",
    "check_batch_size",
    "mirrored_strategy",
    "init_process_group",
    "torch_data_parallel",
    "TorchDataParallel",
]
