"""Has the student's code replaced the grader's own code inside the sandbox? (in the sandbox, trusted)

The op recorder and the unit runner live in the student's process, so a submission can reach them
(``importlib.import_module("grader.checks.forbidden").OpRecorder.record = ...``) and make a guarded call look
clean. ``snapshot()`` runs before the student's module is imported and keeps, for every loaded ``grader``
module, each attribute's object and, for functions and classes, their code, defaults and class dicts;
``changed()`` (bound at snapshot time, so replacing the module's name does not replace the check) lists what
differs. A change is a recorder finding, scored like a forbidden operation. Like every in-process check it
raises the bar, it does not close the door (docs/security.md).
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, Callable

__all__ = ["snapshot"]


def _shape(value: Any) -> Any:
    """What must not change in ``value``: its code and defaults (functions), its own attributes (classes)."""
    if isinstance(value, type):
        return {k: (v, getattr(v, "__code__", None), getattr(v, "__defaults__", None))
                for k, v in list(vars(value).items())}
    return getattr(value, "__code__", None), getattr(value, "__defaults__", None), getattr(value, "__kwdefaults__", None)


# The chain a guarded call's verdict passes through: the runner, the registry, the unit runner, the recorder.
WATCHED = ("grader.runner", "grader.checks", "grader.checks.unit", "grader.checks.forbidden",
           "grader.checks.transpose_conv", "grader.checks.integrity")


def _modules() -> dict[str, Any]:
    return {n: sys.modules[n] for n in WATCHED if n in sys.modules}


def _watched(value: Any) -> bool:
    """Code, not data: functions, classes, modules (a module's caches and flags change legitimately)."""
    return callable(value) or isinstance(value, ModuleType)


def snapshot() -> Callable[[], list[str]]:
    """Take the snapshot now; return the function that says what has changed since (names, at most 10)."""
    taken = {name: (module, {k: (v, _shape(v)) for k, v in list(vars(module).items())
                             if not k.startswith("__") and _watched(v)})
             for name, module in _modules().items()}
    registry = sys.modules.get("grader.checks")
    kinds = dict(getattr(registry, "KINDS", {}))  # the kinds' run functions, by kind
    modules, items, shape = sys.modules, list, _shape  # bound now: the student may replace the globals later

    def changed() -> list[str]:
        found = []
        for name, (module, attrs) in items(taken.items()):
            if modules.get(name) is not module:
                found.append(f"module {name} replaced")
                continue
            now = vars(module)
            for key, (value, was) in items(attrs.items()):
                if key not in now or now[key] is not value or shape(value) != was:
                    found.append(f"{name}.{key}")
        now_kinds = getattr(registry, "KINDS", {})
        found += [f"grader.checks.KINDS[{k!r}]" for k in kinds if now_kinds.get(k) is not kinds[k]
                  or getattr(now_kinds.get(k), "run", None) is not getattr(kinds[k], "run", None)]
        return found[:10]

    return changed
