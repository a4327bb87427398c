"""Hyperparameter search over learning rate, warmup, batch size and model width, on KerasTuner.

KerasTuner is optional (`pip install "kerasllm[tuning]"`): `import kerasllm` does not import it, and
`CausalLMHyperModel` (a `keras_tuner.HyperModel` subclass) is loaded on first use.
"""

from typing import TYPE_CHECKING

from kerasllm.tuning.hyperparameter_search import ALGORITHMS, search
from kerasllm.tuning.search_space import SearchSpace

if TYPE_CHECKING:  # seen by documentation tools; at run time `__getattr__` below imports it
    from kerasllm.tuning.causal_lm_hyper_model import CausalLMHyperModel

__all__ = ["ALGORITHMS", "CausalLMHyperModel", "SearchSpace", "search"]


def __getattr__(name):
    if name == "CausalLMHyperModel":
        from kerasllm.tuning.causal_lm_hyper_model import CausalLMHyperModel

        return CausalLMHyperModel
    raise AttributeError(f"module 'kerasllm.tuning' has no attribute {name!r}")
