"""Kiln's layers: batch-first, NCHW for images."""

from ._base import Layer, ShapeError
from .chain import Chain
from .containers import Parallel, SkipConnection, concat
from .conv import Conv, ConvTranspose
from .dense import Dense
from .dropout import AlphaDropout, Dropout
from .embedding import Embedding
from .mode import ModalLayer, testmode, trainmode
from .norm import BatchNorm, LayerNorm
from .pool import Flatten, GlobalMaxPool, GlobalMeanPool, MaxPool, MeanPool
from .recurrent import GRU, LSTM, RNN

__all__ = [
    "GRU", "LSTM", "RNN", "AlphaDropout", "BatchNorm", "Chain", "Conv", "ConvTranspose", "Dense",
    "Dropout", "Embedding", "Flatten", "GlobalMaxPool", "GlobalMeanPool", "Layer", "LayerNorm",
    "MaxPool", "MeanPool", "ModalLayer", "Parallel", "ShapeError", "SkipConnection", "concat",
    "testmode", "trainmode",
]
