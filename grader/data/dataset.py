"""The dataset API the grader codes against: the embedded shapes set and real PASCAL VOC 2012, one loader.

The work lives in two modules, one concept each: ``grader.core.voc`` (palette, paired transforms, the loader,
the hash) and ``grader.data.shapes`` (the deterministic generator and its process-safe cache). Import from
here.
"""
from __future__ import annotations

from grader.data.shapes import GENERATOR_VERSION, embedded_voc_root, generate_embedded_voc
from grader.core.voc import (
    IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES, VOCDatasetMissing, dataset_hash, load_split, make_loader,
    to_tensors, voc_palette,
)

__all__ = [
    "NUM_CLASSES", "IGNORE_INDEX", "VOC_CLASSES", "GENERATOR_VERSION", "VOCDatasetMissing", "voc_palette",
    "generate_embedded_voc", "embedded_voc_root", "load_split", "to_tensors", "make_loader", "dataset_hash",
]
