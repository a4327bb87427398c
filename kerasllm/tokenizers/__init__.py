"""Tokenizers: text to integer ids and back (byte-level BPE, characters, Hugging Face checkpoints' own), with
save, load and export to the transformers format."""

from kerasllm.tokenizers.byte_pair_tokenizer import BytePairTokenizer
from kerasllm.tokenizers.character_tokenizer import CharacterTokenizer
from kerasllm.tokenizers.hugging_face_tokenizer import HuggingFaceTokenizer
from kerasllm.tokenizers.loading import load
from kerasllm.tokenizers.tokenizer import Tokenizer

__all__ = ["BytePairTokenizer", "CharacterTokenizer", "HuggingFaceTokenizer", "Tokenizer", "load"]
