"""Data sources and client partitions."""

from fedadc.data.digits import digits
from fedadc.data.hf_split import HFImageSplit
from fedadc.data.hub import HubUnavailableError
from fedadc.data.partition import PARTITIONS, partition_indices
from fedadc.data.sources import PATH_SOURCES, SOURCES, load_image_data
from fedadc.data.tensors import ImageData, ImageSplit, TensorSplit, batches
from fedadc.data.transforms import apply_seeded, build_transforms, resolve_augment

__all__ = [
    "PARTITIONS",
    "PATH_SOURCES",
    "SOURCES",
    "HFImageSplit",
    "HubUnavailableError",
    "ImageData",
    "ImageSplit",
    "TensorSplit",
    "apply_seeded",
    "batches",
    "build_transforms",
    "digits",
    "load_image_data",
    "partition_indices",
    "resolve_augment",
]
