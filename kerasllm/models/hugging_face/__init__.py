"""Hugging Face checkpoints in and out: one converter per family (`convert_<family>.py`: a config map
and a weight map), the loader (`loading.py`) and the exporter (`export.py`).

A converter module defines `NAME`, `MODEL_TYPES` (config.json `model_type` values), `TASKS` (kerasllm
task -> transformers class), `BASE_PREFIXES` (where the base model's tensors may live in a task
checkpoint), `EXPORT_PREFIX`, `to_kerasllm(hf_config)`, `to_hugging_face(config, task)`,
`weights(config, task)` (a list of `weights.Weight`) and `ignored(config, task)` (patterns of tensors
a checkpoint may hold that the model does not use).
"""

import os

from kerasllm.models.hugging_face.config import CONFIG_FILE, UnsupportedConfig


def is_model_directory(path):
    """Whether `path` is a folder holding a Hugging Face `config.json`."""
    return isinstance(path, (str, os.PathLike)) and os.path.isfile(os.path.join(os.fspath(path), CONFIG_FILE))


__all__ = ["UnsupportedConfig", "is_model_directory"]
