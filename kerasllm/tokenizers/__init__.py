"""Tokenizers: text to integer ids and back (byte-level BPE and characters), with save and load."""

from kerasllm.tokenizers.byte_pair_tokenizer import BytePairTokenizer
from kerasllm.tokenizers.character_tokenizer import CharacterTokenizer
from kerasllm.tokenizers.loading import load
from kerasllm.tokenizers.tokenizer import Tokenizer

__all__ = ["BytePairTokenizer", "CharacterTokenizer", "Tokenizer", "load"]
