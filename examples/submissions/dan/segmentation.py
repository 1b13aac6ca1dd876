"""Assignment: fully-supervised semantic segmentation (FCN with learned upsampling).

Dan -- work in progress: transpose_conv2d and the metrics are done; the kernel, the net and the
training loops are still TODO.

Implement every function and the class below; keep the names, signatures and docstrings as they
are (the grader calls exactly these). Use torch, numpy and the standard library only. Check your
work with `grader check student_template/` (see README.md).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F  # noqa: F401 -- you will want it (cross_entropy, pad)
from torch import Tensor

__all__ = [
    "transpose_conv2d", "bilinear_kernel", "confusion_matrix", "mean_iou", "pixel_accuracy",
    "SegNet", "overfit_single_example", "train",
]

IGNORE_INDEX = 255  # the VOC "void" label: object borders and unlabelled pixels


def transpose_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1,
                     padding: int = 0, output_padding: int = 0) -> Tensor:
    """Transpose convolution written by hand as a scatter-add; equals F.conv_transpose2d.

    x: (N, C_in, H, W); weight: (C_in, C_out, kH, kW) (the layout of
    torch.nn.functional.conv_transpose2d); bias: (C_out,) or None; stride, padding and
    output_padding are ints applied to both axes (output_padding < stride, as in PyTorch).
    Each input pixel x[n, c, i, j] scatters x[n, c, i, j] * weight[c, :, :, :] into the output
    at (i*stride, j*stride); then `padding` rows/columns are cropped from each side and
    `output_padding` extra rows/columns are kept at the bottom/right.
    Returns (N, C_out, (H-1)*stride - 2*padding + kH + output_padding,
    (W-1)*stride - 2*padding + kW + output_padding), dtype of x. Differentiable.
    """
    N, C_in, H, W = x.shape
    C_out, kH, kW = weight.shape[1:]
    big = torch.zeros(N, C_out, (H - 1) * stride + kH + output_padding, (W - 1) * stride + kW + output_padding,
                      dtype=x.dtype)
    # the slide, literally: every input pixel stamps a scaled copy of the kernel onto the output
    for i in range(H):
        for j in range(W):
            stamp = torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight.to(x.dtype))  # (N, C_out, kH, kW)
            big[:, :, i * stride:i * stride + kH, j * stride:j * stride + kW] += stamp
    H_out = (H - 1) * stride - 2 * padding + kH + output_padding
    W_out = (W - 1) * stride - 2 * padding + kW + output_padding
    out = big[:, :, padding:padding + H_out, padding:padding + W_out]
    if bias is not None:
        out = out + bias.to(x.dtype)[:, None, None]
    return out


def bilinear_kernel(factor: int) -> Tensor:
    """The (2f-1) x (2f-1) float32 kernel that turns transpose convolution into bilinear upsampling.

    Used per channel with stride f and padding f-1, it maps H x W to ((H-1)*f+1) x ((W-1)*f+1)
    and equals bilinear interpolation with align_corners=True. It is the outer product of the
    tent 1 - |d|/f for d = -(f-1) .. f-1; bilinear_kernel(2) is the lecture's
    [[.25, .5, .25], [.5, 1, .5], [.25, .5, .25]].
    """
    raise NotImplementedError("TODO: build the tent 1 - |d|/f for d = -(f-1)..f-1 and return its outer "
                              "product with itself as float32.")


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Confusion matrix of a label map: rows = ground truth, columns = prediction.

    pred, target: integer tensors of the same shape (any shape). Pixels whose target equals
    ignore_index (void) are dropped whatever their prediction. Returns (num_classes, num_classes)
    int64 where entry [t, p] counts pixels of true class t predicted as p. Matrices of several
    images add up to the dataset-level matrix. Raises ValueError on labels outside
    [0, num_classes) among the kept pixels.
    """
    if pred.shape != target.shape:
        raise ValueError("pred and target must have the same shape")
    t = target.detach().cpu().numpy().ravel().astype(np.int64)
    p = pred.detach().cpu().numpy().ravel().astype(np.int64)
    keep = t != ignore_index
    t, p = t[keep], p[keep]
    if np.any((t < 0) | (t >= num_classes) | (p < 0) | (p >= num_classes)):
        raise ValueError(f"labels must be in [0, {num_classes})")
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(conf, (t, p), 1)  # unbuffered: repeated (t, p) pairs all count
    return torch.from_numpy(conf)


def mean_iou(conf: Tensor) -> float:
    """Mean intersection over union from a confusion matrix (rows = truth, columns = prediction).

    IoU_c = TP / (TP + FP + FN). The mean runs over the classes whose union TP + FP + FN is
    non-empty: a class absent from both the ground truth and the prediction is left out (it is
    neither right nor wrong). Returns float('nan') when no class has a non-empty union (e.g. an
    all-void image).
    """
    c = conf.detach().cpu().numpy().astype(np.float64)
    tp = np.diag(c)
    union = c.sum(axis=0) + c.sum(axis=1) - tp
    present = union > 0
    if not present.any():
        return float("nan")
    return float(np.mean(tp[present] / union[present]))


def pixel_accuracy(conf: Tensor) -> float:
    """Fraction of (non-void) pixels predicted correctly: trace / sum of the confusion matrix.

    Returns float('nan') when the matrix is empty (no labelled pixel).
    """
    c = conf.detach().cpu().numpy()
    return float(np.trace(c) / c.sum()) if c.sum() > 0 else float("nan")


class SegNet(nn.Module):
    """A small FCN: a stride-8 encoder, score maps at strides 8, 4 and 2, learned x2 upsampling.

    forward(x): x (N, 3, H, W) float in [0, 1], any H and W (odd too) -> logits
    (N, num_classes, H, W). The decoder upsamples with nn.ConvTranspose2d layers initialised with
    bilinear_kernel per channel (like FCN) and adds skip scores from the encoder at every stride.
    """

    def __init__(self, num_classes: int = 21) -> None:
        """Build the net for `num_classes` classes (21 for PASCAL VOC: background + 20)."""
        super().__init__()
        raise NotImplementedError(
            "TODO: an encoder that downsamples (e.g. three stride-2 stages), 1x1 score layers, and "
            "nn.ConvTranspose2d upsamplers whose weights start as bilinear_kernel per channel, "
            "with at least one skip connection. Keep it small (well under 1M parameters).")

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, 3, H, W) float in [0, 1] -> logits (N, num_classes, H, W) for any H, W."""
        raise NotImplementedError(
            "TODO: pad x to a multiple of the total stride, encode, upsample and add the skip scores, "
            "then crop the logits back to (N, num_classes, H, W).")


def overfit_single_example(model: nn.Module, image: Tensor, target: Tensor, epochs: int) -> list[float]:
    """Train `model` on ONE example until it memorises it; the sanity check before real training.

    image: (1, 3, H, W) float in [0, 1]; target: (1, H, W) int64 with void = 255; both already on
    the model's device. One optimisation step of pixel cross-entropy (void pixels ignored) per
    epoch. Returns the loss of each epoch as Python floats (len == epochs). Leaves the model in
    train mode.
    """
    raise NotImplementedError("TODO: choose an optimizer; each epoch: one forward, cross-entropy with "
                              "ignore_index=255, backward, step; record loss.item().")


def train(model: nn.Module, loader: torch.utils.data.DataLoader, epochs: int) -> list[float]:
    """Train `model` on every batch of `loader` for `epochs` epochs with pixel cross-entropy.

    loader yields (image (B, 3, H, W) float in [0, 1], target (B, H, W) int64, 255 = void) batches
    on the CPU; they are moved to the device of next(model.parameters()). Void pixels are ignored
    by the loss. Returns the mean batch loss of each epoch as Python floats (len == epochs).
    Leaves the model in train mode.
    """
    raise NotImplementedError("TODO: move each batch to the model's device, minimise cross-entropy "
                              "(ignore_index=255), return the mean loss of each epoch.")
