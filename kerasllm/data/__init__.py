"""Data pipeline: corpus loading, packing, padding, masking, and Keras `PyDataset`s for language models."""

from kerasllm.data.language_modeling_dataset import LanguageModelingDataset
from kerasllm.data.masked_language_modeling_dataset import MaskedLanguageModelingDataset
from kerasllm.data.masking import IGNORE_INDEX, mask_tokens
from kerasllm.data.packing import pack_documents
from kerasllm.data.padding import pad_sequences
from kerasllm.data.splits import language_modeling_splits, masked_language_modeling_splits
from kerasllm.data.text_loading import load_documents, load_text
from kerasllm.data.few_shot import few_shot_prompt
from kerasllm.data.mixture import MixtureDataset
from kerasllm.data.replay import ReplayDataset

__all__ = [
    "IGNORE_INDEX",
    "LanguageModelingDataset",
    "MaskedLanguageModelingDataset",
    "language_modeling_splits",
    "load_documents",
    "load_text",
    "mask_tokens",
    "masked_language_modeling_splits",
    "pack_documents",
    "pad_sequences",
]
__all__ += ["MixtureDataset", "ReplayDataset", "few_shot_prompt"]
