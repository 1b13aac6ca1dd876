"""The seam between the light host core and the heavy libraries: numpy and torch, loaded on first use.

The grader's own process stays small (an unchanged regrade imports neither numpy nor torch:
``tests/test_host_process.py``), yet a check kind keeps its whole life in one module (``grader.checks``):
its rubric fields, which the light core reads, beside its judge and sandbox code, which need numpy and
torch. Such a module names its heavy libraries once, at the top::

    from grader.core.lazy import numpy as np, torch

and the library is imported the first time an attribute is read (``np.zeros``), not when the module is.
Nothing is put into ``sys.modules`` before then, so "is numpy loaded?" keeps its plain meaning.
"""
from __future__ import annotations

import importlib
import types
from typing import Any

__all__ = ["LazyModule", "numpy", "torch"]


class LazyModule(types.ModuleType):
    """A stand-in for module ``name`` that imports it on the first attribute read, then becomes a copy of it
    (later reads are plain attribute reads)."""

    def __getattr__(self, attr: str) -> Any:
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r}>"


numpy = LazyModule("numpy")
torch = LazyModule("torch")
