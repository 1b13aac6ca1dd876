"""Ben's submission: an FCN-8s-style net (VGG-like stages, stride 16) trained with plain SGD + momentum.

- transpose_conv2d = im2col run backwards: every input pixel produces a (C_out, kH, kW) patch
  (an einsum with the kernel), and F.fold ("col2im") adds the overlapping patches into the canvas.
- Decoder as in FCN-8s: score /16 -> x2 -> + score /8 -> x2 -> + score /4 -> x4 to full size; the
  upsamplers are ConvTranspose2d layers that start as bilinear interpolation (bilinear_kernel).
- Optimiser: SGD, momentum 0.9, weight decay, "poly" learning-rate decay (FCN / DeepLab recipe).
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
    # one (C_out, kH, kW) patch per input pixel, laid out as fold() wants: (N, C_out*kH*kW, H*W)
    patches = torch.einsum("nchw,cokl->noklhw", x, weight.to(x.dtype)).reshape(N, C_out * kH * kW, H * W)
    full_h = (H - 1) * stride + kH + output_padding
    full_w = (W - 1) * stride + kW + output_padding
    # fold sums overlapping patches placed `stride` apart: exactly the scatter-add. Because
    # output_padding < stride the canvas still holds exactly H x W patch positions.
    canvas = F.fold(patches, output_size=(full_h, full_w), kernel_size=(kH, kW), stride=stride)
    out = canvas[:, :, padding:full_h - padding, padding:full_w - padding]
    if bias is not None:
        out = out + bias.to(x.dtype).view(1, -1, 1, 1)
    return out


def bilinear_kernel(factor: int) -> Tensor:
    """The (2f-1) x (2f-1) float32 kernel that turns transpose convolution into bilinear upsampling.

    Used per channel with stride f and padding f-1, it maps H x W to ((H-1)*f+1) x ((W-1)*f+1)
    and equals bilinear interpolation with align_corners=True. It is the outer product of the
    tent 1 - |d|/f for d = -(f-1) .. f-1; bilinear_kernel(2) is the lecture's
    [[.25, .5, .25], [.5, 1, .5], [.25, .5, .25]].
    """
    size = 2 * factor - 1
    center = (size - 1) / 2
    rows, cols = torch.meshgrid(torch.arange(size, dtype=torch.float64),
                                torch.arange(size, dtype=torch.float64), indexing="ij")
    weights = (1 - (rows - center).abs() / factor) * (1 - (cols - center).abs() / factor)
    return weights.float()


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Confusion matrix of a label map: rows = ground truth, columns = prediction.

    pred, target: integer tensors of the same shape (any shape). Pixels whose target equals
    ignore_index (void) are dropped whatever their prediction. Returns (num_classes, num_classes)
    int64 where entry [t, p] counts pixels of true class t predicted as p. Matrices of several
    images add up to the dataset-level matrix. Raises ValueError on labels outside
    [0, num_classes) among the kept pixels.
    """
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    mask = target != ignore_index
    t, p = target[mask].long(), pred[mask].long()
    for labels in (t, p):
        if labels.numel() > 0 and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"label out of range [0, {num_classes})")
    # one-hot(truth)^T @ one-hot(prediction) counts every (truth, prediction) pair
    t1 = F.one_hot(t, num_classes).long()  # (P, K)
    p1 = F.one_hot(p, num_classes).long()  # (P, K)
    return t1.T @ p1


def mean_iou(conf: Tensor) -> float:
    """Mean intersection over union from a confusion matrix (rows = truth, columns = prediction).

    IoU_c = TP / (TP + FP + FN). The mean runs over the classes whose union TP + FP + FN is
    non-empty: a class absent from both the ground truth and the prediction is left out (it is
    neither right nor wrong). Returns float('nan') when no class has a non-empty union (e.g. an
    all-void image).
    """
    conf = conf.double()
    tp = torch.diagonal(conf)
    union = conf.sum(dim=0) + conf.sum(dim=1) - tp
    iou = tp / union  # 0/0 = nan for classes that appear nowhere: nanmean skips them
    return float(torch.nanmean(iou))


def pixel_accuracy(conf: Tensor) -> float:
    """Fraction of (non-void) pixels predicted correctly: trace / sum of the confusion matrix.

    Returns float('nan') when the matrix is empty (no labelled pixel).
    """
    conf = conf.double()
    return float(torch.trace(conf) / conf.sum())  # 0/0 is nan, as required


def vgg_stage(c_in: int, c_out: int, convs: int = 2) -> nn.Sequential:
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def bilinear_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """ConvTranspose2d that maps H -> factor*H and starts as bilinear interpolation of each channel."""
    k = 2 * factor - 1
    layer = nn.ConvTranspose2d(channels, channels, k, stride=factor, padding=factor - 1,
                               output_padding=factor - 1, bias=False)
    w = torch.zeros_like(layer.weight)
    idx = torch.arange(channels)
    w[idx, idx] = bilinear_kernel(factor)
    layer.weight.data.copy_(w)
    return layer


class SegNet(nn.Module):
    """A small FCN: a stride-8 encoder, score maps at strides 8, 4 and 2, learned x2 upsampling.

    forward(x): x (N, 3, H, W) float in [0, 1], any H and W (odd too) -> logits
    (N, num_classes, H, W). The decoder upsamples with nn.ConvTranspose2d layers initialised with
    bilinear_kernel per channel (like FCN) and adds skip scores from the encoder at every stride.
    """

    def __init__(self, num_classes: int = 21) -> None:
        """Build the net for `num_classes` classes (21 for PASCAL VOC: background + 20)."""
        super().__init__()
        self.pool2 = vgg_stage(3, 32)      # /2
        self.pool4 = vgg_stage(32, 64)     # /4
        self.pool8 = vgg_stage(64, 128)    # /8
        self.pool16 = vgg_stage(128, 192)  # /16
        self.score16 = nn.Conv2d(192, num_classes, 1)
        self.score8 = nn.Conv2d(128, num_classes, 1)
        self.score4 = nn.Conv2d(64, num_classes, 1)
        self.up2a = bilinear_upsampler(num_classes, 2)
        self.up2b = bilinear_upsampler(num_classes, 2)
        self.up4 = bilinear_upsampler(num_classes, 4)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, 3, H, W) float in [0, 1] -> logits (N, num_classes, H, W) for any H, W."""
        N, C, H, W = x.shape
        # zero-pad to a multiple of 16 so that all the skip maps line up; crop the logits afterwards
        x = F.pad(x, [0, (16 - W % 16) % 16, 0, (16 - H % 16) % 16])
        p4 = self.pool4(self.pool2(x))
        p8 = self.pool8(p4)
        p16 = self.pool16(p8)
        s = self.up2a(self.score16(p16)) + self.score8(p8)   # /8
        s = self.up2b(s) + self.score4(p4)                    # /4
        s = self.up4(s)                                       # /1
        return s[:, :, :H, :W]


def overfit_single_example(model: nn.Module, image: Tensor, target: Tensor, epochs: int) -> list[float]:
    """Train `model` on ONE example until it memorises it; the sanity check before real training.

    image: (1, 3, H, W) float in [0, 1]; target: (1, H, W) int64 with void = 255; both already on
    the model's device. One optimisation step of pixel cross-entropy (void pixels ignored) per
    epoch. Returns the loss of each epoch as Python floats (len == epochs). Leaves the model in
    train mode.
    """
    model.train()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    history = []
    for epoch in range(epochs):
        logits = model(image)
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        history.append(loss.item())
    return history


def train(model: nn.Module, loader: torch.utils.data.DataLoader, epochs: int) -> list[float]:
    """Train `model` on every batch of `loader` for `epochs` epochs with pixel cross-entropy.

    loader yields (image (B, 3, H, W) float in [0, 1], target (B, H, W) int64, 255 = void) batches
    on the CPU; they are moved to the device of next(model.parameters()). Void pixels are ignored
    by the loss. Returns the mean batch loss of each epoch as Python floats (len == epochs).
    Leaves the model in train mode.
    """
    device = next(model.parameters()).device
    model.train()
    base_lr = 0.05
    sgd = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9, weight_decay=1e-4)
    total_iters, it = max(1, epochs * len(loader)), 0
    history = []
    for epoch in range(epochs):
        running, count = 0.0, 0
        for images, labels in loader:
            # "poly" decay: lr = base * (1 - it/total)^0.9
            for group in sgd.param_groups:
                group["lr"] = base_lr * (1 - it / total_iters) ** 0.9
            images, labels = images.to(device), labels.to(device)
            loss = F.cross_entropy(model(images), labels, ignore_index=IGNORE_INDEX)
            sgd.zero_grad()
            loss.backward()
            sgd.step()
            running += loss.item()
            count += 1
            it += 1
        history.append(running / max(count, 1))
    return history
