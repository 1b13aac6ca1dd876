"""The student API is frozen: the template must expose exactly the reference's names and signatures.

Both files are modules named `segmentation`, so each is loaded by path under its own name.
"""
from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = ["transpose_conv2d", "bilinear_kernel", "confusion_matrix", "mean_iou", "pixel_accuracy",
             "overfit_single_example", "train"]


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    return _load(REPO / "reference" / "segmentation.py", "contract_reference_segmentation")


@pytest.fixture(scope="module")
def template() -> ModuleType:
    return _load(REPO / "student_template" / "segmentation.py", "contract_template_segmentation")


def _public(module: ModuleType) -> set[str]:
    return set(module.__all__)


def test_same_public_names(reference: ModuleType, template: ModuleType) -> None:
    assert _public(template) == _public(reference) == set(FUNCTIONS) | {"SegNet"}
    for name in _public(reference):
        assert hasattr(template, name) and hasattr(reference, name), name


def _members(module: ModuleType) -> dict[str, Callable[..., Any]]:
    members = {name: getattr(module, name) for name in FUNCTIONS}
    members["SegNet"] = module.SegNet
    members["SegNet.__init__"] = module.SegNet.__init__
    members["SegNet.forward"] = module.SegNet.forward
    return members


@pytest.mark.parametrize("member", FUNCTIONS + ["SegNet.__init__", "SegNet.forward"])
def test_same_signature(reference: ModuleType, template: ModuleType, member: str) -> None:
    ours, theirs = _members(reference)[member], _members(template)[member]
    assert str(inspect.signature(theirs)) == str(inspect.signature(ours))


@pytest.mark.parametrize("member", FUNCTIONS + ["SegNet", "SegNet.__init__", "SegNet.forward"])
def test_same_docstring(reference: ModuleType, template: ModuleType, member: str) -> None:
    ours, theirs = _members(reference)[member], _members(template)[member]
    assert inspect.getdoc(ours), f"{member} needs a docstring stating its contract"
    assert inspect.getdoc(theirs) == inspect.getdoc(ours)


def _call_args() -> dict[str, tuple[Any, ...]]:
    """Valid arguments for each template function: it must fail with TODO, not with a TypeError."""
    x = torch.rand(1, 3, 8, 8)
    y = torch.zeros(1, 8, 8, dtype=torch.long)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=1)
    net = torch.nn.Conv2d(3, 21, 1)
    return {
        "transpose_conv2d": (x, torch.rand(3, 2, 3, 3)),
        "bilinear_kernel": (2,),
        "confusion_matrix": (y, y, 21),
        "mean_iou": (torch.eye(3, dtype=torch.long),),
        "pixel_accuracy": (torch.eye(3, dtype=torch.long),),
        "overfit_single_example": (net, x, y, 2),
        "train": (net, loader, 1),
    }


@pytest.mark.parametrize("name", FUNCTIONS)
def test_template_function_raises_todo(template: ModuleType, name: str) -> None:
    with pytest.raises(NotImplementedError, match=r"^TODO"):
        getattr(template, name)(*_call_args()[name])


def test_template_segnet_raises_todo(template: ModuleType) -> None:
    with pytest.raises(NotImplementedError, match=r"^TODO"):
        template.SegNet()
    with pytest.raises(NotImplementedError, match=r"^TODO"):
        template.SegNet.forward(torch.nn.Module(), torch.rand(1, 3, 8, 8))


def test_reference_functions_do_not_raise_todo(reference: ModuleType) -> None:
    """The same arguments run through the reference: the table above is valid input."""
    for name, args in _call_args().items():
        getattr(reference, name)(*args)
    reference.SegNet()
