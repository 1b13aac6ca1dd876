"""Forbidden operations: what a guarded student call reached (recorded in the sandbox), judged on the host.

A unit check may guard its student function (rubric key ``forbidden``: patterns matched ANYWHERE in a recorded
name, case-insensitively, ``*`` a wildcard; transpose_conv's default forbids the whole transpose-convolution
family: every transposed or slow convolution kernel, every convolution backward (conv2d's input gradient is a
transpose convolution), interpolation and upsampling, under every name the installed torch has:
``tests/test_forbidden_names.py`` enumerates the ops). In the sandbox, ``OpRecorder`` is installed around each
call of that function ONLY (SegNet may use nn.ConvTranspose2d freely) and records, as ``level:name``:

- ``torch:<name>``: a torch function or Tensor method called (``TorchFunctionMode``), however it was looked up;
- ``aten:<name>``: an operator executed (``TorchDispatchMode``: below every Python-level disguise, e.g.
  ``torch.ops.aten.slow_conv_transpose2d``), ``<ns>::<name>`` outside the ``aten`` namespace; a convolution
  with ``transposed=True`` is ``conv_transpose<N>d``;
- ``module:<Class>``: an ``nn.Module`` whose forward ran (a global forward pre-hook);
- ``guard:<what>``: the recorder itself was worked around: a thread or process started inside the call (the
  modes are thread-local), ctypes loaded, the modes or the hook switched off or found off. Every ``guard``
  entry is a finding whatever the patterns (``install_guards``, once, before the student's module is imported).

The record is raw data in the case's output record (``ops``: distinct names, first reached first); the host
matches it against the rubric's patterns (``detected``). The recorder runs inside the student's own process,
which can tamper with it (docs/security.md says what remains possible): a report says an operation was
"detected", never that one was proved absent.
"""
from __future__ import annotations

import fnmatch
import os
import sys
from typing import Any

__all__ = ["DEFAULT_TRANSPOSE_CONV", "OpRecorder", "detected", "describe", "install_guards", "matches"]

# Matched anywhere in a name (``tests/test_forbidden_names.py`` checks every op of the installed torch whose
# name holds "conv" against these and an explicit allow-list of plain forward convolutions).
DEFAULT_TRANSPOSE_CONV = ("conv*transpose", "slow_conv", "thnn_conv", "conv*backward", "conv*d_input", "deform_conv",
                          "interpolate", "upsampl")
MAX_NAMES = 512  # distinct names kept per call; a case's record stays small (the stage JSON is rewritten per case)
_LEVELS = {"torch": "torch function", "aten": "ATen operator", "module": "nn module", "guard": "recorder worked around"}
_ACTIVE: list["OpRecorder"] = []  # the recorder of the guarded call now running: global, seen from every thread


class OpRecorder:
    """A context manager that records the torch operations reached while it is entered (in the sandbox)."""

    def __init__(self, *, operators: bool = True) -> None:
        self.names: dict[str, None] = {}  # insertion-ordered set
        self.truncated = False
        self.operators = operators  # False: torch functions and modules only (cheaper: an import's training cell)

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
        self._modes = [functions(self), dispatch(self)] if self.operators else [functions(self)]
        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(
            lambda module, args: self.add(f"module:{type(module).__name__}"))
        for mode in self._modes:
            mode.__enter__()
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if _ACTIVE and _ACTIVE[-1] is self:
            _ACTIVE.pop()
        self.check_intact("at the end of the call")
        for mode in reversed(self._modes):
            try:
                mode.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - popped by the student's code already: said by check_intact
                self.add("guard:recorder mode removed")
        self._hook.remove()

    def check_intact(self, when: str) -> None:
        """A ``guard`` finding when a mode, the Python dispatch key or the module hook is off."""
        import torch
        from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

        functions = self._modes[0]
        stack = [torch._C._get_function_stack_at(i) for i in range(torch._C._len_torch_function_stack())]
        if functions not in stack or not torch._C._is_torch_function_mode_enabled():
            self.add(f"guard:torch function recording off {when}")
        if self.operators:
            self._dispatch_intact(when, self._modes[1], _get_current_dispatch_mode_stack())
        hooks = torch.nn.modules.module._global_forward_pre_hooks
        if self._hook.id not in hooks:
            self.add(f"guard:module hook removed {when}")

    def _dispatch_intact(self, when: str, dispatch: Any, stack: list) -> None:
        import torch

        if dispatch not in stack or torch._C._dispatch_tls_is_dispatch_key_excluded(torch._C.DispatchKey.Python):
            self.add(f"guard:operator recording off {when}")


_CLASSES: tuple[type, type] | None = None


def _mode_classes() -> tuple[type, type]:
    """The two torch modes, defined on first use (torch is imported in the sandbox only)."""
    global _CLASSES
    if _CLASSES is None:
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode_stack

        class Functions(TorchFunctionMode):
            def __init__(self, recorder: OpRecorder) -> None:
                super().__init__()
                self.recorder = recorder

            def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
                self.recorder.add(f"torch:{_function_name(func)}")
                if self.recorder.operators:  # the operator recording must be on whenever a torch function runs
                    self.recorder._dispatch_intact("during the call", self.recorder._modes[1],
                                                   _get_current_dispatch_mode_stack())
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
    """The operator's name (``add``; ``quantized::conv2d`` outside aten); a convolution run with
    ``transposed=True`` is a transpose convolution whatever entry point reached it (nn.ConvTranspose2d,
    F.conv_transpose2d, aten.convolution ...)."""
    name = func._schema.name.removeprefix("aten::")
    params = [a.name for a in func._schema.arguments]
    if "transposed" in params:
        at = params.index("transposed")
        if kwargs.get("transposed", args[at] if at < len(args) else False) is True:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            return f"conv_transpose{getattr(weight, 'ndim', 4) - 2}d"
    return name


# ---- guards against working around the recorder (installed once, before student code) -------------------

_TAMPER = {  # module -> functions that switch recording off (or pop a mode) when student code calls them
    "torch.utils._python_dispatch": ("_disable_current_modes", "_pop_mode", "_pop_mode_temporarily"),
    "torch.overrides": ("_pop_mode", "_pop_mode_temporarily"),
    "torch._C": ("_pop_torch_function_stack", "_pop_torch_dispatch_stack", "DisableTorchFunction",
                 "DisableTorchFunctionSubclass", "_DisableTorchDispatch", "_ExcludeDispatchKeyGuard",
                 "ExcludeDispatchKeyGuard", "_ForceDispatchKeyGuard", "_SetExcludeDispatchKeyGuard",
                 "_dispatch_tls_set_dispatch_key_excluded", "_set_torch_function_state", "_unset_dispatch_mode",
                 "_set_dispatch_mode"),
}
_AUDITED = {"os.fork": "a process started", "os.forkpty": "a process started", "os.posix_spawn": "a process started",
            "subprocess.Popen": "a process started", "os.system": "a process started", "os.exec": "a process started",
            "ctypes.dlopen": "ctypes used", "ctypes.dlsym": "ctypes used", "ctypes.call_function": "ctypes used"}
_INSTALLED = False


def _note(what: str) -> None:
    if _ACTIVE:
        _ACTIVE[-1].add(f"guard:{what}")


def _from_trusted_code() -> bool:
    """True when the caller two frames up is torch's own code or the grader's (they pop modes internally): its
    file lies there AND its globals are a loaded torch or grader module's own (code compiled under torch's file
    name into the student's namespace is not torch's)."""
    try:
        frame = sys._getframe(2)
    except ValueError:
        return False
    name = frame.f_globals.get("__name__")
    module = sys.modules.get(name) if isinstance(name, str) else None
    return (frame.f_code.co_filename.startswith(_TRUSTED_DIRS) and module is not None
            and getattr(module, "__dict__", None) is frame.f_globals and name.split(".")[0] in ("torch", "grader"))


_TRUSTED_DIRS: tuple[str, ...] = ()


def install_guards() -> None:
    """Before the student's module is imported: note a thread or process started, ctypes loaded, or a mode
    switched off, while a guarded call runs. Idempotent; an audit hook cannot be removed once added."""
    global _INSTALLED, _TRUSTED_DIRS
    if _INSTALLED:
        return
    import importlib
    import threading

    import _thread
    import torch

    _TRUSTED_DIRS = (os.path.dirname(torch.__file__) + os.sep, os.path.dirname(os.path.dirname(__file__)) + os.sep)
    start = _thread.start_new_thread

    def start_new_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
        _note("a thread started inside the call")
        return start(function, *args, **kwargs)

    _thread.start_new_thread = _thread.start_new = threading._start_new_thread = start_new_thread
    for module_name, names in _TAMPER.items():
        module = importlib.import_module(module_name)
        for name in names:
            if hasattr(module, name):
                setattr(module, name, _tamper_wrapper(getattr(module, name), f"{module_name}.{name}"))
    sys.addaudithook(lambda event, args: _note(_AUDITED[event]) if event in _AUDITED and _ACTIVE else None)
    _INSTALLED = True


def _tamper_wrapper(original: Any, qualified: str) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _ACTIVE and not _from_trusted_code():
            _note(f"recording switched off ({qualified})")
        return original(*args, **kwargs)

    wrapper.__name__ = getattr(original, "__name__", qualified.rsplit(".", 1)[-1])
    return wrapper


# ---- on the host -------------------------------------------------------------------------------------

def matches(pattern: str, name: str) -> bool:
    """A pattern matches anywhere in the name, case-insensitively (``conv*transpose`` matches
    ``aten::slow_conv_transpose2d`` and ``ConvTranspose2d``)."""
    return fnmatch.fnmatchcase(name.lower(), f"*{pattern.lower()}*")


def detected(patterns: tuple[str, ...], ops: Any) -> list[str]:
    """The recorded names (``level:name``) that match a forbidden pattern, and every ``guard`` finding
    (the recorder worked around); ``ops`` is untrusted."""
    if not patterns or not isinstance(ops, list):
        return []
    hits = []
    for entry in ops[:MAX_NAMES]:
        if not isinstance(entry, str) or ":" not in entry or len(entry) > 220:  # longer: not the recorder's
            continue
        level, bare = entry.split(":", 1)
        if level == "guard" or any(matches(p, bare) for p in patterns):
            hits.append(entry)
    return hits


def describe(hits: list[str]) -> str:
    """``conv_transpose2d (ATen operator), a thread started inside the call (recorder)`` for a message."""
    parts = []
    for entry in dict.fromkeys(hits):
        level, bare = entry.split(":", 1)
        parts.append(f"{bare} ({_LEVELS.get(level, level)})")
    return ", ".join(parts[:6]) + (f" and {len(parts) - 6} more" if len(parts) > 6 else "")
