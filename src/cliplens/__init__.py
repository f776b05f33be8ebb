"""cliplens: open up CLIP image encoders and explain, with text, what every part contributes."""

from __future__ import annotations

__version__ = "0.1.0"
