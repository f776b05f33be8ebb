"""ImageNet-segmentation (Guillaumin et al.): ``gtsegs_ijcv.mat``, 4,276 images with object/background masks.

Classes: ``["background", "object"]`` (0, 1); no ignore pixels. The file holds a struct ``value`` with
two N x 1 cell arrays, ``img`` (H x W x 3 uint8 images) and ``gt`` (each a cell whose first element is
the H x W mask in {0, 1}).

* The original is MATLAB v7.3, i.e. HDF5 (read with h5py): ``/value/img`` and ``/value/gt`` are
  N x 1 arrays of object references. MATLAB stores arrays column-major, so an image dataset is
  3 x W x H (transposed (2, 1, 0) to H x W x 3) and ``gt[i]`` references a 1 x 1 cell whose ``[0, 0]``
  references the W x H mask (transposed to H x W).
* A MATLAB v5 file of the same structure (e.g. written with ``scipy.io.savemat``) is read with scipy.

Images are read on access (the arrays are the samples' ``image``); ids are the row numbers ``"0"``,
``"1"``, ….
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cliplens.datasets.segmentation import SegmentationDataset
from cliplens.errors import InvalidInputError, MissingDependencyError

__all__ = ["CLASS_NAMES", "MAT_FILE", "ImageNetSegDataset", "find_mat", "load_imagenet_seg", "mat_format"]

MAT_FILE = "gtsegs_ijcv.mat"
CLASS_NAMES = ["background", "object"]
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def find_mat(path: Path) -> Path | None:
    """The ``.mat`` file at ``path`` (a file, or a folder holding ``gtsegs_ijcv.mat``), or None."""
    if path.is_file() and path.suffix.lower() == ".mat":
        return path
    if path.is_dir() and (path / MAT_FILE).is_file():
        return path / MAT_FILE
    return None


def mat_format(path: Path) -> str:
    """``"hdf5"`` (MATLAB v7.3) or ``"v5"`` (MATLAB 5 / 7), from the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if head[:8] == _HDF5_SIGNATURE or head[512:520] == _HDF5_SIGNATURE or b"MATLAB 7.3" in head[:128]:
        return "hdf5"
    if head[:6] == b"MATLAB":
        return "v5"
    raise InvalidInputError(f"{path} is not a MATLAB .mat file (neither MATLAB 5 nor v7.3/HDF5); ImageNet-segmentation "
                            f"is the file {MAT_FILE}")


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise MissingDependencyError(f"{MAT_FILE} is a MATLAB v7.3 (HDF5) file, read with h5py, which is not "
                                     "installed: pip install h5py") from None
    return h5py


def _cell(value: Any, field: str, path: Path) -> np.ndarray:
    """One N x 1 cell array of a struct read by scipy, as a flat object array."""
    try:
        arr = value[field]
    except (KeyError, ValueError, IndexError):
        raise InvalidInputError(f"{path}: the struct 'value' has no field {field!r}; ImageNet-segmentation files "
                                "hold value.img and value.gt") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != object:
        raise InvalidInputError(f"{path}: value.{field} is not a cell array (one cell per image)")
    return arr.reshape(-1)


class ImageNetSegDataset(SegmentationDataset):
    """The rows of an ImageNet-segmentation ``.mat`` file (see the module's documentation)."""

    def __init__(self, path: Path, *, name: str) -> None:
        self.path = path
        self.format = mat_format(path)
        self.name = name
        self.layout = "imagenet-seg"
        self.preset = "imagenet-seg"
        self.class_names = list(CLASS_NAMES)
        self.background = 0
        self.reduce_zero_label = False
        self.root = str(path)
        self.split = None
        self.options = {"format": self.format}
        self._h5: Any = None
        if self.format == "hdf5":
            f = self._file()
            for key in ("value/img", "value/gt"):
                if key not in f:
                    raise InvalidInputError(f"{path}: no /{key} in this HDF5 file; ImageNet-segmentation's "
                                            f"{MAT_FILE} holds /value/img and /value/gt")
            n_img, n_gt = f["value/img"].shape[0], f["value/gt"].shape[0]
            self._imgs = self._gts = None
        else:
            try:
                from scipy.io import loadmat
            except ImportError:
                raise MissingDependencyError(f"{path} is a MATLAB 5 file, read with scipy, which is not installed: "
                                             "pip install scipy") from None
            try:
                mat = loadmat(str(path))
            except NotImplementedError:  # v7.3 after all
                raise InvalidInputError(f"{path}: scipy cannot read this MATLAB file; install h5py") from None
            except Exception as e:
                raise InvalidInputError(f"{path}: cannot read this MATLAB file ({type(e).__name__}: {e})") from None
            if "value" not in mat:
                raise InvalidInputError(f"{path}: no variable 'value'; ImageNet-segmentation's {MAT_FILE} holds a "
                                        "struct value with fields img and gt")
            value = mat["value"]
            if value.dtype.names is None:
                raise InvalidInputError(f"{path}: 'value' is not a struct (fields img and gt)")
            value = value.reshape(-1)[0]
            self._imgs = _cell(value, "img", path)
            self._gts = _cell(value, "gt", path)
            n_img, n_gt = len(self._imgs), len(self._gts)
        if n_img != n_gt:
            raise InvalidInputError(f"{path}: {n_img} images but {n_gt} masks (value.img and value.gt must have one "
                                    "row per image)")
        if n_img == 0:
            raise InvalidInputError(f"{path} holds no images")
        self._n = int(n_img)

    # h5py handles do not pickle (DataLoader workers): reopen on demand
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def _file(self) -> Any:
        if self._h5 is None:
            h5py = _h5py()
            try:
                self._h5 = h5py.File(self.path, "r")
            except OSError as e:
                raise InvalidInputError(f"cannot read {self.path} as HDF5 (MATLAB v7.3): {e}") from None
        return self._h5

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __len__(self) -> int:
        return self._n

    def _id(self, i: int) -> str:
        return str(i)

    def _mask_source(self, i: int) -> str:
        return f"{self.path}: gt {i}"

    def _image(self, i: int) -> np.ndarray:
        if self.format == "hdf5":
            f = self._file()
            try:
                arr = np.asarray(f[f["value/img"][i, 0]]).transpose(2, 1, 0)
            except (KeyError, ValueError, TypeError, IndexError) as e:
                raise InvalidInputError(f"{self.path}: image {i} is not a referenced 3 x W x H array ({e})") from None
        else:
            arr = np.asarray(self._imgs[i])
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise InvalidInputError(f"{self.path}: image {i} has shape {tuple(arr.shape)}; expected H x W x 3")
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(arr)

    def _image_hw(self, i: int) -> tuple[int, int, int]:
        if self.format == "hdf5":  # the shape without reading the pixels: 3 x W x H
            f = self._file()
            try:
                shape = f[f["value/img"][i, 0]].shape
            except (KeyError, ValueError, TypeError, IndexError) as e:
                raise InvalidInputError(f"{self.path}: image {i} is not a referenced 3 x W x H array ({e})") from None
            return int(shape[-1]), int(shape[-2]), 1
        shape = np.shape(self._imgs[i])
        return int(shape[0]), int(shape[1]), 1

    def _image_source(self, i: int) -> str:
        return f"{self.path}: img {i}"

    def _read_mask(self, i: int) -> np.ndarray:
        if self.format == "hdf5":
            f = self._file()
            try:
                cell = f[f["value/gt"][i, 0]]
                ref = cell[0, 0]
                m = np.asarray(f[ref]).T
            except (KeyError, ValueError, TypeError, IndexError) as e:
                raise InvalidInputError(f"{self.path}: gt {i} is not a cell referencing a W x H mask ({e})") from None
        else:
            m = self._gts[i]
            while isinstance(m, np.ndarray) and m.dtype == object:
                m = m.flat[0]
            m = np.asarray(m)
        if m.ndim != 2:
            raise InvalidInputError(f"{self.path}: gt {i} has shape {tuple(m.shape)}; expected an H x W mask")
        vals = np.unique(m)
        if not np.isin(vals, (0, 1)).all():
            shown = ", ".join(str(v) for v in vals[~np.isin(vals, (0, 1))][:6].tolist())
            raise InvalidInputError(f"{self.path}: gt {i} holds the value(s) {shown}; ImageNet-segmentation masks are "
                                    "0 (background) and 1 (object)")
        return m.astype(np.int64)

    def _describe(self) -> dict[str, Any]:
        return {"file": str(self.path)}


def probe(path: Path) -> list[str]:
    """``["imagenet-seg"]`` if ``path`` is (or holds) a ``.mat`` file (for detection)."""
    return ["imagenet-seg"] if find_mat(path) else []


def load_imagenet_seg(root: str | os.PathLike, *, name: str | None = None) -> ImageNetSegDataset:
    """ImageNet-segmentation from ``gtsegs_ijcv.mat`` (the file, or the folder holding it).

    Raises:
        MissingDependencyError: a v7.3 file without h5py installed.
        InvalidInputError: no such file, or a file without the ``value.img`` / ``value.gt`` structure.
    """
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not path.exists():
        raise InvalidInputError(f"imagenet-seg: {os.fspath(root)!r} does not exist; give {MAT_FILE} or the folder "
                                "holding it")
    mat = find_mat(path)
    if mat is None:
        raise InvalidInputError(f"imagenet-seg: {os.fspath(root)!r} is not a .mat file and holds no {MAT_FILE}")
    return ImageNetSegDataset(mat, name=name or "imagenet-seg")
