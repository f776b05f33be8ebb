"""Data sets: one loader per layout, all yielding :class:`Sample` (image, label, id, attributes).

:func:`open_dataset` picks the layout from what it is given (:func:`detect_layout`):

* ``"toy"``, ``"toy:colour"``, ``"toy:label=count,n=500"`` -> ``toy`` (:func:`~.toy.load_toy`);
* a ``.csv`` / ``.tsv`` / ``.txt`` file -> ``csv`` (:func:`~.csv.load_csv`), except ``LOC_val_solution.csv``
  (``imagenet``) and a Waterbirds ``metadata.csv`` (``waterbirds``);
* a folder with ``metadata.csv`` (img_filename, y, place, split) -> ``waterbirds``
  (:func:`~.waterbirds.load_waterbirds`);
* a folder with ``LOC_val_solution.csv``, or whose sub-folders are all ImageNet wnids -> ``imagenet``
  (:func:`~.imagenet.load_imagenet`);
* any other folder with sub-folders -> ``imagefolder`` (:func:`~.imagefolder.load_image_folder`); a folder
  whose sub-folders are all named like splits (``train/``, ``test/``) needs ``split=``;
* a folder of unlabelled images -> ``images`` (:func:`~.imagefolder.load_images`), only when asked for
  with ``layout="images"`` (detection refuses a folder with no labels rather than guess).

Segmentation sets (images with class masks) open with :func:`open_segmentation`. Both kinds are entries of
one registry (:mod:`cliplens.datasets.registry`: names, aliases, loaders, detection; :func:`register_dataset` adds
yours), are named with one spec syntax (``"NAME:key=value,..."``) and describe themselves with the same keys
(:mod:`cliplens.datasets.sequence`).

Labels and class names always come from the data (folder names, columns, metadata, scene factors),
never from the order in which files happen to be listed.
"""

from __future__ import annotations

from cliplens.datasets.base import (
    IMAGE_EXTENSIONS,
    Dataset,
    ListDataset,
    Sample,
    Subset,
    is_hidden,
    is_image_file,
)
from cliplens.datasets.csv import CsvDataset, load_csv, read_class_list
from cliplens.datasets.imagefolder import ImageFolderDataset, load_image_folder, load_images
from cliplens.datasets.imagenet import ImageNetDataset, imagenet_classes, load_imagenet
from cliplens.datasets.registry import (
    KINDS,
    LAYOUTS,
    REGISTRY,
    SEGMENTATION_SETS,
    DatasetEntry,
    dataset_entry,
    dataset_names,
    detect_layout,
    detect_segmentation_layout,
    find_segmentation_sets,
    open_dataset,
    open_segmentation,
    register_dataset,
)
from cliplens.datasets.seg_folder import load_segmentation_folder
from cliplens.datasets.segmentation import FileSegmentationDataset, SegmentationDataset, SegSample
from cliplens.datasets.sequence import DataSequence
from cliplens.datasets.toy import ToyDataset, load_toy
from cliplens.datasets.waterbirds import WaterbirdsDataset, load_waterbirds

__all__ = [
    "IMAGE_EXTENSIONS", "KINDS", "LAYOUTS", "REGISTRY", "SEGMENTATION_SETS", "CsvDataset", "DataSequence", "Dataset",
    "DatasetEntry", "FileSegmentationDataset", "ImageFolderDataset", "ImageNetDataset", "ListDataset", "Sample", "SegSample",
    "SegmentationDataset", "Subset", "ToyDataset", "WaterbirdsDataset", "dataset_entry", "dataset_names",
    "detect_layout", "detect_segmentation_layout", "find_segmentation_sets", "imagenet_classes", "is_hidden",
    "is_image_file", "load_csv", "load_image_folder", "load_imagenet", "load_images", "load_segmentation_folder",
    "load_toy", "load_waterbirds", "open_dataset", "open_segmentation", "read_class_list", "register_dataset",
]
