"""Kiln's layers: batch-first, NCHW for images."""

from ._base import Layer, ShapeError
from .chain import Chain
from .containers import Parallel, SkipConnection, concat
from .dense import Dense
from .dropout import AlphaDropout, Dropout
from .embedding import Embedding
from .mode import ModalLayer, testmode, trainmode
from .norm import BatchNorm, LayerNorm
from .recurrent import GRU, LSTM, RNN

__all__ = [
    "GRU", "LSTM", "RNN", "AlphaDropout", "BatchNorm", "Chain", "Dense", "Dropout", "Embedding",
    "Layer", "LayerNorm", "ModalLayer", "Parallel", "ShapeError", "SkipConnection", "concat",
    "testmode", "trainmode",
]
