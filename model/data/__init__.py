"""Data for sweeper's ViT studies: a procedural dataset that needs no download, loaders for the real
datasets of the paper's evaluations, and per-framework augmentation pipelines.

Samples are dicts (``image``, and where the dataset has them ``label``, ``mask``, ``depth``); see
model.data.base for the conventions (IGNORE_INDEX = 255 in masks, depth in metres with 0 = invalid).
"""

from model.data.ade20k import ADE20K
from model.data.base import IGNORE_INDEX, DatasetError, Sample, Transform, VisionDataset, finalize
from model.data.cityscapes import Cityscapes
from model.data.imagefolder import ImageFolderDataset
from model.data.nyu import NYUDepthV2
from model.data.procedural import SHAPES, ProceduralShapes
from model.data.registry import DATASETS, build_dataset, check_root, dataset_class
from model.data.scenes import PATTERNS, ProceduralScenes
from model.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiCrop,
    dense_eval,
    dense_train,
    eval_transform,
    supervised_train,
)

__all__ = [
    "ADE20K",
    "DATASETS",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHAPES",
    "Cityscapes",
    "DatasetError",
    "ImageFolderDataset",
    "MultiCrop",
    "NYUDepthV2",
    "PATTERNS",
    "ProceduralScenes",
    "ProceduralShapes",
    "Sample",
    "Transform",
    "VisionDataset",
    "build_dataset",
    "check_root",
    "dataset_class",
    "dense_eval",
    "dense_train",
    "eval_transform",
    "finalize",
    "supervised_train",
]
