"""Quantization (post-training and quantization-aware), pruning and low-rank compression."""

from kerasllm.quantization.fake_quant import fake_quantize_int4_weight
from kerasllm.quantization.fake_quant import fake_quantize_int8_input
from kerasllm.quantization.fake_quant import fake_quantize_int8_weight
from kerasllm.quantization.quantize import convert
from kerasllm.quantization.quantize import quantize

__all__ = []
__all__ += [
    "fake_quantize_int8_weight",
    "fake_quantize_int8_input",
    "fake_quantize_int4_weight",
    "quantize",
    "convert",
]

from kerasllm.quantization.strip_pruning import strip_pruning

__all__ += ["strip_pruning"]

from kerasllm.quantization.factorize import factorize

__all__ += ["factorize"]

from kerasllm.quantization.fake_quant import fake_quantize_int8_static
from kerasllm.quantization.min_max_observer import MinMaxObserver
from kerasllm.quantization.moving_average_min_max_observer import MovingAverageMinMaxObserver

__all__ += ["fake_quantize_int8_static", "MinMaxObserver", "MovingAverageMinMaxObserver"]
