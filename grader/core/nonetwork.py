"""Runs INSIDE the sandbox: a student's attempt to use the network, said as what to do instead.

Grading has no network. Code that follows the lecture (``resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)``)
loads the course's pretrained weights offline from ``$TORCH_HOME/hub/checkpoints`` (``grader.weights`` puts
exactly the rubric's allowed files there); asking for any other weight makes torch's hub try to download it,
which fails with a bare ``URLError`` the student cannot act on. ``explain`` turns any network failure into
"grading has no network; the pretrained weights this course provides are: ...", naming the files that are
there (and the torchvision names that load them) and the URL the code tried. Only the standard library and,
when already imported, torch and torchvision.
"""
from __future__ import annotations

import errno
import os
import socket
import sys
import urllib.error
from types import TracebackType

__all__ = ["NO_NETWORK", "explain", "is_network_error", "provided"]

NO_NETWORK = "grading has no network; the pretrained weights this course provides are: "
_NET_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.ENETDOWN, errno.ECONNRESET}


def is_network_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from is a failed connection or name lookup, or torch's hub
    failing to create its download file in the read-only checkpoints folder (it does so before connecting)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, (urllib.error.URLError, socket.gaierror, socket.herror, ConnectionError)):
            return True
        if isinstance(exc, OSError) and exc.errno in _NET_ERRNOS:
            return True
        if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES) and \
                os.path.join("hub", "checkpoints") in str(exc.filename):  # the hub's download file, before it connects
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _checkpoints() -> str:
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return os.path.join(home, "hub", "checkpoints")


def _torchvision_names() -> dict[str, str]:
    """file name -> the torchvision names that load it (only when torchvision is already imported: the
    fork server preloads it)."""
    models = sys.modules.get("torchvision.models")
    names: dict[str, str] = {}
    if models is None:
        return names
    try:
        for model in models.list_models():
            for weight in models.get_model_weights(model):
                file = weight.url.rsplit("/", 1)[-1]
                names.setdefault(file, f"{type(weight).__name__}.{weight.name}")
    except Exception:  # noqa: BLE001 - a name is a courtesy; the file list is what counts
        return names
    return names


def provided() -> list[str]:
    """What this sandbox holds, as a student reads it: ``ResNet18_Weights.IMAGENET1K_V1 (resnet18-f37072fd.pth)``."""
    try:
        files = sorted(f for f in os.listdir(_checkpoints()) if not f.startswith("."))
    except OSError:
        return []
    names = _torchvision_names() if files else {}
    return [f"{names[f]} ({f})" if f in names else f for f in files]


def _tried_url(tb: TracebackType | None) -> str | None:
    """The URL the failing call was fetching (torch.hub's ``url`` argument), from the traceback's frames."""
    found = None
    while tb is not None:
        value = tb.tb_frame.f_locals.get("url")
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            found = value[:300]
        tb = tb.tb_next
    return found


def explain(exc: BaseException) -> str | None:
    """The message for a network failure (None for any other exception)."""
    if not is_network_error(exc):
        return None
    have = provided()
    url = _tried_url(exc.__traceback__)
    tried = f" Your code tried to download {url}." if url else " Your code tried to reach the network."
    return (NO_NETWORK + (", ".join(have) if have else "none") + "." + tried +
            (" Load one of those (unchanged torchvision code finds them offline), or train without pretrained "
             "weights." if have else " Train without pretrained weights (weights=None)."))
