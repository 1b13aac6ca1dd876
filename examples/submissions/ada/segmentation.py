"""Ada's submission: a small U-Net (conv blocks, max-pool down, learned bilinear up, concatenation skips).

Design notes (for the TA):
- transpose_conv2d is the textbook identity "transpose conv = ordinary correlation of the zero-stuffed
  input with the flipped, in/out-swapped kernel": I insert stride-1 zeros between the input pixels, pad
  by k-1 on every side, correlate with F.conv2d, then crop `padding` and keep `output_padding`.
- No BatchNorm: GroupNorm behaves the same in train and eval mode and does not care about the batch
  size (overfitting ONE image has batch size 1).
- Upsampling is a depthwise ConvTranspose2d (groups=channels) whose every filter starts as the bilinear
  kernel, so at initialisation it is exactly bilinear x2 upsampling; training may reshape it.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
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
    n, c_in, h, w = x.shape
    _, c_out, kh, kw = weight.shape
    # 1) zero-stuffing: the input pixels land stride apart, exactly where the scatter puts them
    stuffed = x.new_zeros(n, c_in, (h - 1) * stride + 1, (w - 1) * stride + 1)
    stuffed[:, :, ::stride, ::stride] = x
    # 2) a "full" correlation: pad k-1 all round (+ output_padding at the bottom/right) so that every
    #    position a kernel tap can reach is produced
    stuffed = F.pad(stuffed, (kw - 1, kw - 1 + output_padding, kh - 1, kh - 1 + output_padding))
    # 3) scattering with w == gathering with w flipped in space and with in/out channels swapped
    kernel = weight.flip(2, 3).transpose(0, 1).to(x.dtype)  # (C_out, C_in, kH, kW)
    full = F.conv2d(stuffed, kernel)  # (N, C_out, (H-1)*s + kH + op, (W-1)*s + kW + op)
    h_out = (h - 1) * stride - 2 * padding + kh + output_padding
    w_out = (w - 1) * stride - 2 * padding + kw + output_padding
    out = full[:, :, padding:padding + h_out, padding:padding + w_out]
    if bias is not None:
        out = out + bias.to(x.dtype)[None, :, None, None]
    return out


def bilinear_kernel(factor: int) -> Tensor:
    """The (2f-1) x (2f-1) float32 kernel that turns transpose convolution into bilinear upsampling.

    Used per channel with stride f and padding f-1, it maps H x W to ((H-1)*f+1) x ((W-1)*f+1)
    and equals bilinear interpolation with align_corners=True. It is the outer product of the
    tent 1 - |d|/f for d = -(f-1) .. f-1; bilinear_kernel(2) is the lecture's
    [[.25, .5, .25], [.5, 1, .5], [.25, .5, .25]].
    """
    size = 2 * factor - 1
    center = factor - 1
    kernel = torch.zeros(size, size, dtype=torch.float32)
    for i in range(size):
        for j in range(size):
            kernel[i, j] = (1 - abs(i - center) / factor) * (1 - abs(j - center) / factor)
    return kernel


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
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long()
    valid = target != ignore_index
    target, pred = target[valid], pred[valid]
    if ((target < 0) | (target >= num_classes) | (pred < 0) | (pred >= num_classes)).any():
        raise ValueError(f"labels must lie in [0, {num_classes})")
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    # index_put_ with accumulate adds 1 at every (truth, prediction) pair, repeated pairs included
    conf.index_put_((target.cpu(), pred.cpu()), torch.ones_like(target.cpu()), accumulate=True)
    return conf


def mean_iou(conf: Tensor) -> float:
    """Mean intersection over union from a confusion matrix (rows = truth, columns = prediction).

    IoU_c = TP / (TP + FP + FN). The mean runs over the classes whose union TP + FP + FN is
    non-empty: a class absent from both the ground truth and the prediction is left out (it is
    neither right nor wrong). Returns float('nan') when no class has a non-empty union (e.g. an
    all-void image).
    """
    ious = []
    for c in range(conf.shape[0]):
        tp = conf[c, c].item()
        fn = conf[c, :].sum().item() - tp
        fp = conf[:, c].sum().item() - tp
        if tp + fp + fn > 0:
            ious.append(tp / (tp + fp + fn))
    return sum(ious) / len(ious) if ious else math.nan


def pixel_accuracy(conf: Tensor) -> float:
    """Fraction of (non-void) pixels predicted correctly: trace / sum of the confusion matrix.

    Returns float('nan') when the matrix is empty (no labelled pixel).
    """
    total = conf.sum().item()
    return conf.trace().item() / total if total > 0 else math.nan


class DoubleConv(nn.Module):
    """(3x3 conv -> GroupNorm -> ReLU) twice: the U-Net building block."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class BilinearUp(nn.Module):
    """x2 learned upsampling: a depthwise ConvTranspose2d that starts as bilinear interpolation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # kernel 3 / stride 2 / padding 1 / output_padding 1: H -> 2H exactly
        self.up = nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1,
                                     groups=channels, bias=False)
        with torch.no_grad():
            self.up.weight.copy_(bilinear_kernel(2).expand_as(self.up.weight))

    def forward(self, x: Tensor) -> Tensor:
        return self.up(x)


class SegNet(nn.Module):
    """A small FCN: a stride-8 encoder, score maps at strides 8, 4 and 2, learned x2 upsampling.

    forward(x): x (N, 3, H, W) float in [0, 1], any H and W (odd too) -> logits
    (N, num_classes, H, W). The decoder upsamples with nn.ConvTranspose2d layers initialised with
    bilinear_kernel per channel (like FCN) and adds skip scores from the encoder at every stride.
    """

    def __init__(self, num_classes: int = 21) -> None:
        """Build the net for `num_classes` classes (21 for PASCAL VOC: background + 20)."""
        super().__init__()
        widths = [16, 32, 64, 96]
        self.inc = DoubleConv(3, widths[0])  # full resolution
        self.down1 = DoubleConv(widths[0], widths[1])  # /2
        self.down2 = DoubleConv(widths[1], widths[2])  # /4
        self.bottom = DoubleConv(widths[2], widths[3])  # /8
        self.up3, self.dec3 = BilinearUp(widths[3]), DoubleConv(widths[3] + widths[2], widths[2])
        self.up2, self.dec2 = BilinearUp(widths[2]), DoubleConv(widths[2] + widths[1], widths[1])
        self.up1, self.dec1 = BilinearUp(widths[1]), DoubleConv(widths[1] + widths[0], widths[0])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, 3, H, W) float in [0, 1] -> logits (N, num_classes, H, W) for any H, W."""
        h, w = x.shape[-2:]
        # three poolings: make H and W multiples of 8 by repeating the border pixels, crop at the end
        x = F.pad(x, (0, -w % 8, 0, -h % 8), mode="replicate")
        s1 = self.inc(x)
        s2 = self.down1(F.max_pool2d(s1, 2))
        s4 = self.down2(F.max_pool2d(s2, 2))
        s8 = self.bottom(F.max_pool2d(s4, 2))
        y = self.dec3(torch.cat([self.up3(s8), s4], dim=1))
        y = self.dec2(torch.cat([self.up2(y), s2], dim=1))
        y = self.dec1(torch.cat([self.up1(y), s1], dim=1))
        return self.head(y)[:, :, :h, :w]


def overfit_single_example(model: nn.Module, image: Tensor, target: Tensor, epochs: int) -> list[float]:
    """Train `model` on ONE example until it memorises it; the sanity check before real training.

    image: (1, 3, H, W) float in [0, 1]; target: (1, H, W) int64 with void = 255; both already on
    the model's device. One optimisation step of pixel cross-entropy (void pixels ignored) per
    epoch. Returns the loss of each epoch as Python floats (len == epochs). Leaves the model in
    train mode.
    """
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(epochs):
        opt.zero_grad()
        loss = F.cross_entropy(model(image), target, ignore_index=IGNORE_INDEX)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def train(model: nn.Module, loader: torch.utils.data.DataLoader, epochs: int) -> list[float]:
    """Train `model` on every batch of `loader` for `epochs` epochs with pixel cross-entropy.

    loader yields (image (B, 3, H, W) float in [0, 1], target (B, H, W) int64, 255 = void) batches
    on the CPU; they are moved to the device of next(model.parameters()). Void pixels are ignored
    by the loss. Returns the mean batch loss of each epoch as Python floats (len == epochs).
    Leaves the model in train mode.
    """
    device = next(model.parameters()).device
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    # halve the learning rate for the last third of the epochs: a plain, robust schedule
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[max(1, (2 * epochs) // 3)], gamma=0.5)
    history = []
    for _ in range(epochs):
        losses = []
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            opt.zero_grad()
            loss = F.cross_entropy(model(images), targets, ignore_index=IGNORE_INDEX)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        history.append(sum(losses) / max(1, len(losses)))
    return history
