"""Reference solution: fully-supervised semantic segmentation (FCN with learned upsampling).

Reads like the lecture: the transpose convolution is the scatter-add the slides draw, the bilinear
kernel is the slide's kernel, the metrics come from one confusion matrix. Self-contained on purpose
(torch and the standard library only): this folder is also graded as a submission on its own.
"""
from __future__ import annotations

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
    N, C_in, H, W = x.shape
    _, C_out, kH, kW = weight.shape
    H_out = (H - 1) * stride - 2 * padding + kH + output_padding
    W_out = (W - 1) * stride - 2 * padding + kW + output_padding
    # The full (uncropped) canvas, plus output_padding so the extra rows exist even when padding is 0.
    full = x.new_zeros(N, C_out, (H - 1) * stride + kH + output_padding,
                       (W - 1) * stride + kW + output_padding)
    # Loop over the kH*kW taps only: tap (a, b) of every input pixel lands on one strided grid.
    for a in range(kH):
        for b in range(kW):
            tap = torch.einsum("nchw,co->nohw", x, weight[:, :, a, b])  # (N, C_out, H, W)
            full[:, :, a:a + (H - 1) * stride + 1:stride, b:b + (W - 1) * stride + 1:stride] += tap
    out = full[:, :, padding:padding + H_out, padding:padding + W_out]  # (N, C_out, H_out, W_out)
    if bias is not None:
        out = out + bias.view(1, C_out, 1, 1)
    return out


def bilinear_kernel(factor: int) -> Tensor:
    """The (2f-1) x (2f-1) float32 kernel that turns transpose convolution into bilinear upsampling.

    Used per channel with stride f and padding f-1, it maps H x W to ((H-1)*f+1) x ((W-1)*f+1)
    and equals bilinear interpolation with align_corners=True. It is the outer product of the
    tent 1 - |d|/f for d = -(f-1) .. f-1; bilinear_kernel(2) is the lecture's
    [[.25, .5, .25], [.5, 1, .5], [.25, .5, .25]].
    """
    d = torch.arange(-(factor - 1), factor, dtype=torch.float64)  # (2f-1,)
    tent = 1.0 - d.abs() / factor  # (2f-1,)
    return torch.outer(tent, tent).to(torch.float32)  # (2f-1, 2f-1)


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Confusion matrix of a label map: rows = ground truth, columns = prediction.

    pred, target: integer tensors of the same shape (any shape). Pixels whose target equals
    ignore_index (void) are dropped whatever their prediction. Returns (num_classes, num_classes)
    int64 where entry [t, p] counts pixels of true class t predicted as p. Matrices of several
    images add up to the dataset-level matrix. Raises ValueError on labels outside
    [0, num_classes) among the kept pixels.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    keep = target != ignore_index
    t = target[keep].long()  # (P,)
    p = pred[keep].long()  # (P,)
    for name, labels in (("target", t), ("pred", p)):
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} has labels outside [0, {num_classes})")
    # One bincount over the pair index t*K + p counts every (truth, prediction) pair at once.
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).long()  # (K, K)


def mean_iou(conf: Tensor) -> float:
    """Mean intersection over union from a confusion matrix (rows = truth, columns = prediction).

    IoU_c = TP / (TP + FP + FN). The mean runs over the classes whose union TP + FP + FN is
    non-empty: a class absent from both the ground truth and the prediction is left out (it is
    neither right nor wrong). Returns float('nan') when no class has a non-empty union (e.g. an
    all-void image).
    """
    conf = conf.double()
    tp = conf.diag()  # (K,)
    union = conf.sum(0) + conf.sum(1) - tp  # (K,) = TP + FP + FN
    present = union > 0
    if not bool(present.any()):
        return float("nan")
    return float((tp[present] / union[present]).mean())


def pixel_accuracy(conf: Tensor) -> float:
    """Fraction of (non-void) pixels predicted correctly: trace / sum of the confusion matrix.

    Returns float('nan') when the matrix is empty (no labelled pixel).
    """
    total = conf.sum()
    if int(total) == 0:
        return float("nan")
    return float(conf.diag().sum().double() / total.double())


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _bilinear_up2(channels: int) -> nn.ConvTranspose2d:
    """A x2 learned upsampler initialised, like FCN, to per-channel bilinear interpolation."""
    # kernel 3, stride 2, padding 1, output_padding 1 maps H -> 2H exactly.
    up = nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1, bias=False)
    with torch.no_grad():
        up.weight.zero_()
        for c in range(channels):  # channel c only feeds channel c: no mixing at init
            up.weight[c, c] = bilinear_kernel(2)
    return up


class SegNet(nn.Module):
    """A small FCN: a stride-8 encoder, score maps at strides 8, 4 and 2, learned x2 upsampling.

    forward(x): x (N, 3, H, W) float in [0, 1], any H and W (odd too) -> logits
    (N, num_classes, H, W). The decoder upsamples with nn.ConvTranspose2d layers initialised with
    bilinear_kernel per channel (like FCN) and adds skip scores from the encoder at every stride.
    """

    def __init__(self, num_classes: int = 21) -> None:
        """Build the net for `num_classes` classes (21 for PASCAL VOC: background + 20)."""
        super().__init__()
        self.stride = 8  # the input is padded to a multiple of this so every skip lines up
        self.enc1 = nn.Sequential(_conv_bn_relu(3, 32, 2), _conv_bn_relu(32, 32, 1))  # /2
        self.enc2 = nn.Sequential(_conv_bn_relu(32, 64, 2), _conv_bn_relu(64, 64, 1))  # /4
        self.enc3 = nn.Sequential(_conv_bn_relu(64, 128, 2), _conv_bn_relu(128, 128, 1))  # /8
        self.score8 = nn.Conv2d(128, num_classes, 1)
        self.score4 = nn.Conv2d(64, num_classes, 1)
        self.score2 = nn.Conv2d(32, num_classes, 1)
        self.up8to4 = _bilinear_up2(num_classes)
        self.up4to2 = _bilinear_up2(num_classes)
        self.up2to1 = _bilinear_up2(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, 3, H, W) float in [0, 1] -> logits (N, num_classes, H, W) for any H, W."""
        N, C, H, W = x.shape
        s = self.stride
        # Pad bottom/right up to a multiple of the total stride; the logits are cropped back below.
        x = F.pad(x, (0, (-W) % s, 0, (-H) % s))  # (N, 3, Hp, Wp)
        f2 = self.enc1(x)  # (N, 32, Hp/2, Wp/2)
        f4 = self.enc2(f2)  # (N, 64, Hp/4, Wp/4)
        f8 = self.enc3(f4)  # (N, 128, Hp/8, Wp/8)
        y = self.up8to4(self.score8(f8)) + self.score4(f4)  # (N, K, Hp/4, Wp/4)
        y = self.up4to2(y) + self.score2(f2)  # (N, K, Hp/2, Wp/2)
        y = self.up2to1(y)  # (N, K, Hp, Wp)
        return y[:, :, :H, :W]  # (N, K, H, W)


def overfit_single_example(model: nn.Module, image: Tensor, target: Tensor, epochs: int) -> list[float]:
    """Train `model` on ONE example until it memorises it; the sanity check before real training.

    image: (1, 3, H, W) float in [0, 1]; target: (1, H, W) int64 with void = 255; both already on
    the model's device. One optimisation step of pixel cross-entropy (void pixels ignored) per
    epoch. Returns the loss of each epoch as Python floats (len == epochs). Leaves the model in
    train mode.
    """
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(epochs):
        loss = F.cross_entropy(model(image), target, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
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
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Cosine decay to zero over the whole run: a high rate to find the shapes, a low one to sharpen borders.
    steps = max(1, epochs * len(loader))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history = []
    for _ in range(epochs):
        total, batches = 0.0, 0
        for image, target in loader:
            image, target = image.to(device), target.to(device)
            loss = F.cross_entropy(model(image), target, ignore_index=IGNORE_INDEX)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total, batches = total + loss.item(), batches + 1
        history.append(total / max(1, batches))
    return history
