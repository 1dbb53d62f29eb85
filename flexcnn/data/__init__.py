"""Data sources, splits, statistics, loaders and batch augmentation.

Each source file registers its sources when imported; the import below fills
the registry in ``sources``. A new source is one file (copy ``fer_csv.py``, or
``embedded.py`` for data that ships inside a package) and one name in that line.
"""

# The source files, imported for their registrations; their order is the order config errors list them in.
from flexcnn.data import embedded, folders, fer_csv, torchvision_sets  # noqa: F401  isort: skip
from flexcnn.data.base import DataSplits, ImageTensors, StreamedImages
from flexcnn.data.sources import Target, available_sources, load_splits

__all__ = ["DataSplits", "ImageTensors", "StreamedImages", "Target", "available_sources", "load_splits"]
