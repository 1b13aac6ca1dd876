"""The recorder cannot be walked around quietly (issue 22): a thread or process started inside a guarded call,
the modes switched off with torch's own API, or the recording found off, is itself a finding; an honest call
(the reference, conv2d on a zero-inserted input) gives none."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from grader.checks.forbidden import DEFAULT_TRANSPOSE_CONV, OpRecorder, detected, install_guards

REPO = Path(__file__).resolve().parent.parent
X = torch.randn(1, 2, 4, 4, dtype=torch.float64)
W = torch.randn(2, 3, 3, 3, dtype=torch.float64)


def _builtin() -> torch.Tensor:
    return F.conv_transpose2d(X, W, None, 2, 1, 1)


def _findings(fn) -> list[str]:
    install_guards()
    recorder = OpRecorder()
    with recorder:
        fn()
    return detected(DEFAULT_TRANSPOSE_CONV, recorder.record()["ops"])


def _other_thread() -> None:
    box = {}
    worker = threading.Thread(target=lambda: box.update(out=_builtin()))
    worker.start()
    worker.join()
    assert box["out"].shape == (1, 3, 8, 8)


def _raw_thread() -> None:
    import _thread

    done = threading.Event()
    _thread.start_new_thread(lambda: (_builtin(), done.set()), ())
    done.wait(10)


def _modes_off() -> None:
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes(), torch._C.DisableTorchFunction():
        _builtin()


def _stacks_popped() -> None:
    functions = torch._C._pop_torch_function_stack()
    try:
        _builtin()
    finally:
        torch._C._push_on_torch_function_stack(functions)


def _dispatch_key_excluded() -> None:
    with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Python)):
        _builtin()


def _hook_cleared() -> None:
    torch.nn.modules.module._global_forward_pre_hooks.clear()


def _process() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


@pytest.mark.parametrize("bypass", [_other_thread, _raw_thread, _modes_off, _stacks_popped, _dispatch_key_excluded,
                                    _hook_cleared, _process])
def test_working_around_the_recorder_is_a_finding(bypass) -> None:
    found = _findings(bypass)
    assert any(f.startswith("guard:") for f in found), found


def test_an_honest_call_has_no_finding_and_a_plain_call_is_still_caught() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("reference_for_guards", REPO / "reference" / "segmentation.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)

    def zero_insertion() -> None:
        up = X.new_zeros(1, 2, 7, 7)
        up[:, :, ::2, ::2] = X
        F.conv2d(F.pad(up, (1, 1, 1, 1)), W.transpose(0, 1).flip(2, 3))

    assert _findings(lambda: reference.transpose_conv2d(X, W, None, 2, 1, 1)) == []
    assert _findings(zero_insertion) == []
    assert "aten:conv_transpose2d" in _findings(_builtin)
    assert "aten:convolution_backward" in _findings(
        lambda: torch.nn.grad.conv2d_input((1, 3, 7, 7), W, X, 2, 1))


def test_a_finding_outside_a_guarded_call_is_not_recorded() -> None:
    install_guards()
    _other_thread()  # no recorder active: nothing to say, nothing raised
    recorder = OpRecorder()
    with recorder:
        pass
    assert recorder.record()["ops"] == []


@pytest.mark.parametrize("switch", ["dispatch", "function"])
def test_a_recorder_found_switched_off_is_a_finding(switch: str) -> None:
    """Switched off before the guarded call (as a module could at import), so no wrapper sees it happen."""
    install_guards()
    off = torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Python)) \
        if switch == "dispatch" else torch._C.DisableTorchFunction()
    off.__enter__()
    try:
        recorder = OpRecorder()
        with recorder:
            _builtin()
    finally:
        off.__exit__(None, None, None)
    found = detected(DEFAULT_TRANSPOSE_CONV, recorder.record()["ops"])
    assert any(f.startswith("guard:") and "recording off" in f for f in found), found
