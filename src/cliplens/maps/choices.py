"""The values map options take, in a module that imports nothing: the command line lists them in ``--help``
without loading the methods (which need torch). Each is re-exported by the module that uses it."""

from __future__ import annotations

__all__ = ["FEATURE_MODES", "FITS", "NORMALIZATIONS"]

#: how an image is fitted to the model (:func:`cliplens.maps.inputs.fit_images`)
FITS: tuple[str, ...] = ("whole", "squash", "crop", "short")
#: how raw scores become a map (:func:`cliplens.maps.base.normalize_maps`)
NORMALIZATIONS: tuple[str, ...] = ("minmax", "raw")
#: CLIP Surgery's feature step (:class:`cliplens.maps.surgery.Surgery`)
FEATURE_MODES: tuple[str, ...] = ("redundancy", "empty", "none")
