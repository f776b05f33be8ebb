"""Exceptions and warnings. Every message names what was wrong and what to do."""

from __future__ import annotations


class CliplensError(Exception):
    """Base class of every error cliplens raises on purpose."""


class ModelNotFoundError(CliplensError, LookupError):
    """A model name that no loader knows (the message suggests close names)."""


class ModelLoadError(CliplensError):
    """A known model that could not be loaded (offline, missing file, bad checkpoint)."""


class UnsupportedArchitectureError(CliplensError):
    """A model whose image tower cliplens cannot decompose (e.g. a ResNet CLIP)."""


class ImageLoadError(CliplensError):
    """An image file that cannot be read (missing, unreadable or corrupt)."""


class PixelValueError(CliplensError, ValueError):
    """An image tensor of the wrong shape, dtype or value range."""


class EmptyTextError(CliplensError, ValueError):
    """An empty (or whitespace-only) text where a text is required."""


class MissingDependencyError(CliplensError, ImportError):
    """An optional dependency (open_clip, transformers) is needed but not installed."""


class TextTruncatedWarning(UserWarning):
    """A text was longer than the model's context and was truncated."""
