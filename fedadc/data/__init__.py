"""Data sources and client partitions."""

from fedadc.data.digits import digits
from fedadc.data.partition import PARTITIONS, partition_indices
from fedadc.data.tensors import ImageData, ImageSplit, batches

__all__ = ["PARTITIONS", "ImageData", "ImageSplit", "batches", "digits", "partition_indices"]
