"""Forbidden operations: what a guarded student call reached (recorded in the sandbox), judged on the host.

A unit check may guard its student function (rubric key ``forbidden``, glob patterns; transpose_conv's
default forbids the built-in transpose convolution and upsampling). In the sandbox, ``OpRecorder`` is
installed around each call of that function ONLY (SegNet may use nn.ConvTranspose2d freely) and records the
names of the torch operations reached, at three levels:

- ``torch:<name>``: a torch function or Tensor method called (``torch.overrides.TorchFunctionMode``), e.g.
  ``torch:conv_transpose2d`` for ``F.conv_transpose2d`` however it was looked up (``getattr`` included);
- ``aten:<name>``: an ATen operator executed (``TorchDispatchMode``: below every Python-level disguise, e.g.
  ``torch.ops.aten.convolution``); a convolution with ``transposed=True`` is named ``conv_transpose<N>d``;
- ``module:<Class>``: an ``nn.Module`` whose forward ran (a global forward pre-hook), e.g.
  ``module:ConvTranspose2d``.

The record is raw data in the case's output record (``ops``: distinct names, first reached first); the
host matches it against the rubric's patterns (``detected``). The recorder runs inside the student's own
process, which can tamper with it: a report says an operation was "detected", never that one was proved
absent.
"""
from __future__ import annotations

import fnmatch
from typing import Any

__all__ = ["DEFAULT_TRANSPOSE_CONV", "OpRecorder", "detected", "describe"]

# transpose_conv2d by hand must not reach the built-in transpose convolution (any dimension, any way in),
# the upsampling functions, or the backward of a convolution (torch.nn.grad.conv2d_input computes a
# transpose convolution as convolution_backward).
DEFAULT_TRANSPOSE_CONV = ("conv_transpose*", "ConvTranspose*", "interpolate", "upsample*", "convolution_backward")
MAX_NAMES = 512  # distinct names kept per call; a case's record stays small (the stage JSON is rewritten per case)
_LEVELS = {"torch": "torch function", "aten": "ATen operator", "module": "nn module"}


class OpRecorder:
    """A context manager that records the torch operations reached while it is entered (in the sandbox)."""

    def __init__(self) -> None:
        self.names: dict[str, None] = {}  # insertion-ordered set
        self.truncated = False

    def add(self, name: str) -> None:
        if name in self.names:
            return
        if len(self.names) >= MAX_NAMES:
            self.truncated = True
            return
        self.names[name[:200]] = None

    def record(self) -> dict[str, Any]:
        """The raw fields a case's output record carries."""
        return {"ops": list(self.names), "ops_truncated": self.truncated}

    def __enter__(self) -> "OpRecorder":
        import torch

        functions, dispatch = _mode_classes()
        self._modes = [functions(self), dispatch(self)]
        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(
            lambda module, args: self.add(f"module:{type(module).__name__}"))
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(None, None, None)
        self._hook.remove()


_CLASSES: tuple[type, type] | None = None


def _mode_classes() -> tuple[type, type]:
    """The two torch modes, defined on first use (torch is imported in the sandbox only)."""
    global _CLASSES
    if _CLASSES is None:
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode

        class Functions(TorchFunctionMode):
            def __init__(self, recorder: OpRecorder) -> None:
                super().__init__()
                self.recorder = recorder

            def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
                self.recorder.add(f"torch:{_function_name(func)}")
                return func(*args, **(kwargs or {}))

        class Dispatch(TorchDispatchMode):
            def __init__(self, recorder: OpRecorder) -> None:
                super().__init__()
                self.recorder = recorder

            def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
                kwargs = kwargs or {}
                self.recorder.add(f"aten:{_aten_name(func, args, kwargs)}")
                return func(*args, **kwargs)

        _CLASSES = (Functions, Dispatch)
    return _CLASSES


def _function_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    if name in ("__get__", "__set__"):  # a Tensor property: name the property, not the descriptor call
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return str(name)


def _aten_name(func: Any, args: tuple, kwargs: dict) -> str:
    """The operator's name; a convolution run with ``transposed=True`` is a transpose convolution whatever
    entry point reached it (nn.ConvTranspose2d, F.conv_transpose2d, torch.ops.aten.convolution ...)."""
    name = func.overloadpacket.__name__
    params = [a.name for a in func._schema.arguments]
    if "transposed" in params:
        at = params.index("transposed")
        if kwargs.get("transposed", args[at] if at < len(args) else False) is True:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            return f"conv_transpose{getattr(weight, 'ndim', 4) - 2}d"
    return name


# ---- on the host -------------------------------------------------------------------------------------

def detected(patterns: tuple[str, ...], ops: Any) -> list[str]:
    """The recorded names (``level:name``) that match a forbidden pattern; ``ops`` is untrusted."""
    if not patterns or not isinstance(ops, list):
        return []
    hits = []
    for entry in ops[:MAX_NAMES]:
        if not isinstance(entry, str) or ":" not in entry:
            continue
        bare = entry.split(":", 1)[1][:200]
        if any(fnmatch.fnmatchcase(bare, p) for p in patterns):
            hits.append(entry[:220])
    return hits


def describe(hits: list[str]) -> str:
    """``conv_transpose2d (torch function), conv_transpose2d (ATen operator)`` for a message."""
    parts = []
    for entry in dict.fromkeys(hits):
        level, bare = entry.split(":", 1)
        parts.append(f"{bare} ({_LEVELS.get(level, level)})")
    return ", ".join(parts[:6]) + (f" and {len(parts) - 6} more" if len(parts) > 6 else "")
