"""Transformer building blocks, written with `keras.ops` only."""

from kerasllm.layers.decoder_block import DecoderBlock
from kerasllm.layers.encoder_block import EncoderBlock
from kerasllm.layers.feed_forward import FeedForward
from kerasllm.layers.normalization import LayerNormalization, RMSNormalization, RMSNormalizationPlusOne
from kerasllm.layers.position_embedding import PositionEmbedding
from kerasllm.layers.rotary_embedding import RotaryEmbedding
from kerasllm.layers.self_attention import SelfAttention
from kerasllm.layers.token_embedding import TokenEmbedding

__all__ = [
    "DecoderBlock",
    "EncoderBlock",
    "FeedForward",
    "LayerNormalization",
    "PositionEmbedding",
    "RMSNormalization",
    "RMSNormalizationPlusOne",
    "RotaryEmbedding",
    "SelfAttention",
    "TokenEmbedding",
]

from kerasllm.layers.low_rank_dense import LowRankDense

__all__ += ["LowRankDense"]
