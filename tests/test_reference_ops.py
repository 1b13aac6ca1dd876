"""The reference's operations against independent oracles: PyTorch, hand-computed cases, numpy.

minGPT style: every claim is an allclose against code that does not share the reference's logic.
"""
from __future__ import annotations

import ast
import inspect
import math
import random
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from reference.segmentation import (
    SegNet, bilinear_kernel, confusion_matrix, mean_iou, pixel_accuracy, transpose_conv2d,
)

# ---------------------------------------------------------------- transpose convolution


def _random_config(rng: random.Random) -> dict:
    """A random conv_transpose2d configuration that PyTorch accepts (output at least 1x1)."""
    while True:
        k, s = rng.randint(1, 5), rng.randint(1, 4)
        cfg = dict(n=rng.randint(1, 3), c_in=rng.randint(1, 4), c_out=rng.randint(1, 4), k=k, stride=s,
                   padding=rng.randint(0, k - 1), output_padding=rng.randint(0, s - 1),  # op < stride
                   h=rng.randint(1, 7), w=rng.randint(1, 7), bias=rng.random() < 0.5)
        crop = k - 2 * cfg["padding"] + cfg["output_padding"]  # output size = (n - 1) * stride + crop
        if (cfg["h"] - 1) * s + crop >= 1 and (cfg["w"] - 1) * s + crop >= 1:
            return cfg


CONFIGS = [_random_config(random.Random(seed)) for seed in range(240)]


@pytest.mark.parametrize("seed", range(len(CONFIGS)))
def test_transpose_conv2d_equals_pytorch(seed: int) -> None:
    cfg = CONFIGS[seed]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg["n"], cfg["c_in"], cfg["h"], cfg["w"], generator=gen, dtype=torch.float64)
    weight = torch.randn(cfg["c_in"], cfg["c_out"], cfg["k"], cfg["k"], generator=gen, dtype=torch.float64)
    bias = torch.randn(cfg["c_out"], generator=gen, dtype=torch.float64) if cfg["bias"] else None
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=cfg["output_padding"])
    expected = F.conv_transpose2d(x, weight, bias, **kw)
    got = transpose_conv2d(x, weight, bias, **kw)
    assert got.shape == expected.shape, cfg
    assert torch.allclose(got, expected, rtol=0, atol=1e-10), cfg


def test_configs_cover_every_stride_padding_and_output_padding() -> None:
    seen = {(c["stride"], c["output_padding"]) for c in CONFIGS}
    assert seen == {(s, op) for s in range(1, 5) for op in range(s)}
    assert {c["k"] for c in CONFIGS} == {1, 2, 3, 4, 5} and {c["bias"] for c in CONFIGS} == {True, False}
    assert max(c["padding"] for c in CONFIGS) == 4


def test_transpose_conv2d_is_differentiable_like_pytorch() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    ours = torch.autograd.grad(transpose_conv2d(x, w, stride=2, padding=1).square().sum(), (x, w))
    theirs = torch.autograd.grad(F.conv_transpose2d(x, w, stride=2, padding=1).square().sum(), (x, w))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_transpose_conv2d_source_avoids_builtin_upsampling() -> None:
    """Only code counts, not the docstring that names the function it must equal."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(transpose_conv2d)))
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not used & {"conv_transpose2d", "ConvTranspose2d", "interpolate", "upsample", "Upsample"}


# ---------------------------------------------------------------- bilinear kernel


def test_bilinear_kernel_2_is_the_lecture_matrix() -> None:
    expected = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    kernel = bilinear_kernel(2)
    assert kernel.dtype == torch.float32 and torch.equal(kernel, expected)


def test_lecture_worked_example_4x4_to_7x7() -> None:
    x = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)  # values 4*r + c
    y = transpose_conv2d(x, bilinear_kernel(2).double()[None, None], stride=2, padding=1)
    grid = torch.linspace(0, 3, 7, dtype=torch.float64)  # 0, 0.5, ..., 3 on each axis
    expected = 4 * grid[:, None] + grid[None, :]  # (7, 7): 0, 0.5, 1, ..., 15
    assert y.shape == (1, 1, 7, 7)
    assert torch.allclose(y[0, 0], expected, rtol=0, atol=1e-12)
    interp = F.interpolate(x, size=(7, 7), mode="bilinear", align_corners=True)
    assert torch.allclose(y, interp, rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bilinear_kernel_per_channel_equals_interpolate(factor: int) -> None:
    gen = torch.Generator().manual_seed(factor)
    x = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64)
    kernel = bilinear_kernel(factor).double()
    assert kernel.shape == (2 * factor - 1, 2 * factor - 1)
    weight = torch.zeros(3, 3, *kernel.shape, dtype=torch.float64)
    for c in range(3):  # per channel: channel c feeds only channel c
        weight[c, c] = kernel
    y = transpose_conv2d(x, weight, stride=factor, padding=factor - 1)
    size = (4 * factor + 1, 5 * factor + 1)  # ((H-1)f+1, (W-1)f+1)
    expected = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    # The kernel is float32 (1/3 is not exact): compare at float32 precision.
    assert y.shape == expected.shape and torch.allclose(y, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- metrics


def test_confusion_matrix_explicit_2x3_example() -> None:
    target = torch.tensor([[0, 1, 2], [2, 255, 1]])
    pred = torch.tensor([[0, 2, 2], [1, 0, 1]])
    expected = torch.tensor([[1, 0, 0],   # truth 0: one pixel, predicted 0
                             [0, 1, 1],   # truth 1: predicted 2 once, 1 once
                             [0, 1, 1]])  # truth 2: predicted 2 once, 1 once (void pixel dropped)
    conf = confusion_matrix(pred, target, 3)
    assert conf.dtype == torch.int64 and torch.equal(conf, expected)
    # IoU: class 0 = 1/1, class 1 = 1/(1+1+1), class 2 = 1/(1+1+1)
    assert mean_iou(conf) == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)
    assert pixel_accuracy(conf) == pytest.approx(3 / 5)


def test_rows_are_ground_truth_columns_prediction() -> None:
    target = torch.tensor([0, 0, 0, 1])
    pred = torch.tensor([1, 1, 0, 1])
    conf = confusion_matrix(pred, target, 2)
    assert torch.equal(conf, torch.tensor([[1, 2], [0, 1]]))  # truth 0 predicted as 1 twice: row 0, column 1


def test_void_pixels_ignored_whatever_the_prediction() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 8, 8), generator=gen)
    target[:, :2] = 255
    pred = torch.randint(0, 5, (2, 8, 8), generator=gen)
    other = pred.clone()
    other[target == 255] = (other[target == 255] + 1) % 5
    assert torch.equal(confusion_matrix(pred, target, 5), confusion_matrix(other, target, 5))
    assert int(confusion_matrix(pred, target, 5).sum()) == int((target != 255).sum())


def test_custom_ignore_index() -> None:
    target, pred = torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0])
    assert torch.equal(confusion_matrix(pred, target, 3, ignore_index=2),
                       torch.tensor([[1, 0, 0], [1, 0, 0], [0, 0, 0]]))


def test_class_absent_from_both_is_left_out_of_the_mean() -> None:
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1])
    conf = confusion_matrix(pred, target, 4)  # classes 2 and 3 appear nowhere
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; classes 2, 3 excluded (not counted as 0 or 1)
    assert mean_iou(conf) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_perfect_prediction_scores_one() -> None:
    target = torch.tensor([[0, 3, 3], [255, 1, 0]])
    conf = confusion_matrix(target.clone(), target, 21)
    assert mean_iou(conf) == 1.0 and pixel_accuracy(conf) == 1.0


def test_all_void_image_is_nan() -> None:
    target = torch.full((4, 4), 255)
    conf = confusion_matrix(torch.zeros(4, 4, dtype=torch.long), target, 21)
    assert int(conf.sum()) == 0
    assert math.isnan(mean_iou(conf)) and math.isnan(pixel_accuracy(conf))


def test_out_of_range_labels_raise() -> None:
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)


def _numpy_metrics(pred: np.ndarray, target: np.ndarray, k: int) -> tuple[np.ndarray, float, float]:
    """An independent oracle: np.add.at for the matrix, a loop over classes for IoU."""
    keep = target != 255
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (target[keep], pred[keep]), 1)
    ious = []
    for c in range(k):
        inter = np.sum((target == c) & (pred == c) & keep)
        union = np.sum(((target == c) | (pred == c)) & keep)
        if union > 0:
            ious.append(inter / union)
    return conf, float(np.mean(ious)), float(np.sum(keep & (pred == target)) / np.sum(keep))


@pytest.mark.parametrize("seed", range(10))
def test_metrics_agree_with_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 22))
    target = rng.integers(0, k, size=(3, 17, 13))
    target[rng.random(target.shape) < 0.2] = 255
    pred = np.where(rng.random(target.shape) < 0.6, np.where(target == 255, 0, target),
                    rng.integers(0, k, size=target.shape))
    conf_np, miou_np, acc_np = _numpy_metrics(pred, target, k)
    conf = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), k)
    assert np.array_equal(conf.numpy(), conf_np)
    assert mean_iou(conf) == pytest.approx(miou_np, abs=1e-12)
    assert pixel_accuracy(conf) == pytest.approx(acc_np, abs=1e-12)


# ---------------------------------------------------------------- the net


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 3, 65, 67), (1, 3, 97, 31)])
def test_segnet_output_shape_and_finite(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = SegNet().eval()
    with torch.no_grad():
        logits = net(torch.rand(*shape))
    assert logits.shape == (shape[0], 21, *shape[2:])
    assert torch.isfinite(logits).all()


def test_segnet_num_classes_and_size() -> None:
    net = SegNet(num_classes=5)
    assert net(torch.rand(1, 3, 33, 18)).shape == (1, 5, 33, 18)
    assert sum(p.numel() for p in net.parameters()) < 1_000_000


def test_segnet_decoder_starts_as_bilinear_upsampling() -> None:
    net = SegNet()
    ups = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert ups, "the decoder must upsample with nn.ConvTranspose2d"
    for up in ups:
        c_in, c_out, kh, kw = up.weight.shape
        factor = up.stride[0]
        kernel = bilinear_kernel(factor)
        assert (kh, kw) == kernel.shape
        expected = torch.zeros(c_in, c_out, kh, kw)
        for c in range(min(c_in, c_out)):
            expected[c, c] = kernel
        assert torch.equal(up.weight.detach(), expected)
