"""Data sources, splits, statistics, loaders and batch augmentation."""

from flexcnn.data.base import DataSplits, ImageTensors, StreamedImages
from flexcnn.data.sources import Target, available_sources, load_splits

__all__ = ["DataSplits", "ImageTensors", "StreamedImages", "Target", "available_sources", "load_splits"]
