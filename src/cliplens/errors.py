"""Exceptions and warnings. Every message names what was wrong and what to do.

Every error cliplens raises for a user's mistake derives from :class:`CliplensError`; the
command line turns them into one readable paragraph and exit code 2.
"""

from __future__ import annotations


class CliplensError(Exception):
    """Base class of every error cliplens raises on purpose."""


class InvalidInputError(CliplensError, ValueError):
    """An argument with a wrong value (out of range, wrong shape, unknown name, …)."""


class HookNameError(CliplensError, KeyError):
    """A hook name that the forward does not know (the message lists the valid names)."""

    def __str__(self) -> str:  # KeyError would print the message inside quotes
        return str(self.args[0]) if self.args else ""


class ModelNotFoundError(CliplensError, LookupError):
    """A model name that no loader knows (the message suggests close names)."""


class ModelLoadError(CliplensError):
    """A known model that could not be loaded (offline, missing file, bad checkpoint)."""


class PretrainedRequiredError(ModelLoadError):
    """A known architecture was named without weights (``pretrained``); the message lists the tags."""


class UnsupportedArchitectureError(CliplensError):
    """A model whose image tower cliplens cannot decompose (e.g. a ResNet CLIP)."""


class ImageLoadError(CliplensError):
    """An image that cannot be read (missing, unreadable, corrupt or too large).

    Attributes:
        source: the file (or a description of the input).
        reason: what is wrong with it.
    """

    def __init__(self, message: str, *, source: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.source = source
        self.reason = reason or message


class PixelValueError(CliplensError, ValueError):
    """An image tensor of the wrong shape, dtype or value range."""


class EmptyTextError(CliplensError, ValueError):
    """An empty (or whitespace-only) text where a text is required."""


class MissingDependencyError(CliplensError, ImportError):
    """An optional dependency (open_clip, transformers, …) is needed but not installed."""


def install_hint(package: str, extra: str) -> str:
    """How to install an optional dependency: its own package from the package index, or the project's extra
    from a clone of cliplens (extras are named with hyphens only, so every pip accepts them)."""
    return f"pip install {package} (or, in a clone of cliplens, pip install -e \".[{extra}]\")"


class OutputExistsError(CliplensError, FileExistsError):
    """An output path that already holds a user's files (cliplens never overwrites them)."""


class TextTruncatedWarning(UserWarning):
    """A text was longer than the model's context and was truncated."""


class AssumedTokenizerWarning(UserWarning):
    """A wrapped model's tokenizer was assumed (``cliplens.wrap(model)`` without ``name=`` or ``tokenizer=``)."""


class RandomWeightsWarning(UserWarning):
    """A model was built with random weights (asked for explicitly with ``pretrained="random"``)."""
