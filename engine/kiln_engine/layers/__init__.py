"""Kiln's layers: batch-first, NCHW for images."""

from ._base import Layer, ShapeError
from .chain import Chain
from .dense import Dense

__all__ = ["Chain", "Dense", "Layer", "ShapeError"]
