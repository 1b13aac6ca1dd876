"""What the network kinds share: building the student's net, seeded, in the sandbox; reading a loss
history on the host. The loss history is the student's own report: checked, never worth points alone.

The net is evaluated as its class computes it, not as the student's training function left it (red team B4: a
forward hook that returned logits made from the target scored full marks without training): ``NetStart`` is
taken before the student's function runs (a digest of the seeded parameters, the classes' own ``forward``), and
``for_evaluation`` then removes every forward, forward-pre and backward hook (the net's modules' and torch's
global ones), drops an instance attribute ``forward`` and puts back a class or a class ``forward`` the function
replaced. In-process limits: code the student's module ran at import (its own ``SegNet.forward``, a patched
torch) is part of what is evaluated; only the host's judgement of the outputs is proof.
"""
from __future__ import annotations

import collections
import hashlib
import random
from dataclasses import dataclass
from typing import Any

from grader.core.lazy import numpy as np
from grader.core.lazy import torch

__all__ = ["seed_everything", "build_model", "losses_of", "NetStart", "parameter_digest", "for_evaluation"]

# A module's hook tables and torch's global ones (torch.nn.modules.module); the names a torch version lacks are skipped.
_MODULE_HOOKS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
                 "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = tuple(f"_global{name}" for name in _MODULE_HOOKS)
_WORDS = {name: "a backward hook" if "backward" in name else "a forward pre-hook" if "pre" in name else "a forward hook"
          for name in _MODULE_HOOKS}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(student: Any, config: dict, device: str) -> Any:
    """``SegNet(num_classes=...)`` built after seeding with the check's seed, on the stage's device."""
    seed_everything(config["seed"])
    return student.SegNet(num_classes=config["num_classes"]).to(device)


def losses_of(record: dict | None) -> list[float] | None:
    """The recorded loss history as floats, or None when it is not a list of numbers (NaN/inf allowed: the
    judge says so)."""
    losses = (record or {}).get("losses")
    if not isinstance(losses, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in losses):
        return None
    return [float(v) for v in losses]


@dataclass(frozen=True)
class NetStart:
    """The net as the grader built it, taken before the student's training function runs."""

    digest: str  # parameter_digest of the seeded parameters
    model_class: type
    forwards: tuple[tuple[type, Any], ...]  # (class, its own ``forward`` or None) for every module class in the net

    @classmethod
    def of(cls, model: Any) -> NetStart:
        classes = dict.fromkeys(type(m) for m in torch.nn.Module.modules(model))
        return cls(parameter_digest(model), type(model), tuple((c, vars(c).get("forward")) for c in classes))


def parameter_digest(model: Any) -> str:
    """sha256 of the net's parameters (names and bytes; buffers such as BatchNorm's running statistics left out:
    a forward pass in train mode changes them without any training)."""
    digest = hashlib.sha256()
    for name, param in torch.nn.Module.named_parameters(model):
        digest.update(name.encode() + b"\0")
        digest.update(param.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def for_evaluation(model: Any, start: NetStart) -> list[str]:
    """Undo what the student's function did to how the net computes (see the module's docstring); returns what
    was undone, said in words for the student's message (empty: nothing)."""
    undone = []
    if type(model) is not start.model_class:
        object.__setattr__(model, "__class__", start.model_class)
        undone.append("the model's class was replaced")
    for klass, forward in start.forwards:
        if vars(klass).get("forward") is not forward:
            undone.append(f"{klass.__name__}.forward was replaced")
            if forward is None:
                type.__delattr__(klass, "forward")
            else:
                type.__setattr__(klass, "forward", forward)
    table = torch.nn.modules.module
    for name in _GLOBAL_HOOKS:
        if hasattr(table, name):
            if getattr(table, name):
                undone.append("a global module hook")
            setattr(table, name, collections.OrderedDict())
    for module in torch.nn.Module.modules(model):
        own = vars(module)
        if own.pop("forward", None) is not None:
            undone.append("an instance attribute `forward`")
        for name in _MODULE_HOOKS:
            if name in own:
                if own[name]:
                    undone.append(f"{_WORDS[name]} on {type(module).__name__}")
                object.__setattr__(module, name, collections.OrderedDict())
    return list(dict.fromkeys(undone))
