"""The real-data layer: sources (download, mirror, checksums), readers, negative sampling,
splits and the processed format of DESIGN §2.

Typical use::

    paths = fetch_sources("frappe", "raw", "data/raw/frappe")       # mirror or network
    meta = build_dataset("frappe", "raw", paths, "data/processed/frappe", seed=2019)
    ds = load_processed("data/processed/frappe")
    train = ds.split("train")                                       # ids, labels, values
"""

from .build import build_dataset
from .errors import DataError
from .processed import SPLITS, ProcessedDataset, Split, load_processed
from .sources import (
    DATASETS,
    MIRROR_ENV,
    REGISTRY,
    Source,
    download,
    fetch_sources,
    resolve_mirror,
    source_paths,
    sources_for,
)

__all__ = [
    "DATASETS",
    "MIRROR_ENV",
    "REGISTRY",
    "SPLITS",
    "DataError",
    "ProcessedDataset",
    "Source",
    "Split",
    "build_dataset",
    "download",
    "fetch_sources",
    "load_processed",
    "resolve_mirror",
    "source_paths",
    "sources_for",
]
