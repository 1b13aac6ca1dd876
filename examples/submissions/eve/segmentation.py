"""Eve's submission: an FCN on an ImageNet-pretrained ResNet-18, as the lecture suggests.

"Encoder convolutional layers are typically pre-trained on ImageNet": the encoder is torchvision's ResNet-18
loaded with ResNet18_Weights.IMAGENET1K_V1 (torchvision downloads it at home; the grader provides it offline
when the course allows it). The decoder is FCN-8s taken down to stride 2: 1x1 score maps at strides 32, 16, 8, 4
and 2, each fused into the one above by a learned x2 upsampler initialised to bilinear interpolation.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch import Tensor

VOID = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the statistics the pretrained encoder saw
IMAGENET_STD = (0.229, 0.224, 0.225)


def transpose_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1,
                     padding: int = 0, output_padding: int = 0) -> Tensor:
    """Transpose convolution as a direct convolution: insert stride-1 zeros between the input pixels, pad by
    k-1 (output_padding more at the bottom/right), convolve with the flipped, channel-swapped kernel, then crop
    ``padding`` from each side."""
    N, C_in, H, W = x.shape
    _, C_out, kH, kW = weight.shape
    H_out = (H - 1) * stride - 2 * padding + kH + output_padding
    W_out = (W - 1) * stride - 2 * padding + kW + output_padding
    grid = x.new_zeros(N, C_in, (H - 1) * stride + 1, (W - 1) * stride + 1)
    grid[:, :, ::stride, ::stride] = x  # (N, C_in, (H-1)s+1, (W-1)s+1)
    grid = F.pad(grid, (kW - 1, kW - 1 + output_padding, kH - 1, kH - 1 + output_padding))
    kernel = weight.flip(2, 3).transpose(0, 1)  # (C_out, C_in, kH, kW)
    full = F.conv2d(grid, kernel, bias)  # (N, C_out, (H-1)s+kH+op, (W-1)s+kW+op)
    return full[:, :, padding:padding + H_out, padding:padding + W_out]


def bilinear_kernel(factor: int) -> Tensor:
    """The (2f-1)^2 kernel of bilinear upsampling by f: a tent in each direction, outer product."""
    ramp = torch.tensor([1.0 - abs(i) / factor for i in range(1 - factor, factor)], dtype=torch.float32)
    return ramp[:, None] * ramp[None, :]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """rows: truth, columns: prediction; void target pixels dropped."""
    if pred.shape != target.shape:
        raise ValueError("pred and target must have the same shape")
    valid = target != ignore_index
    t, p = target[valid].long(), pred[valid].long()
    if t.numel() and (t.min() < 0 or t.max() >= num_classes or p.min() < 0 or p.max() >= num_classes):
        raise ValueError("label outside [0, num_classes)")
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    conf.index_put_((t, p), torch.ones_like(t), accumulate=True)
    return conf


def mean_iou(conf: Tensor) -> float:
    conf = conf.double()
    inter = torch.diagonal(conf)
    union = conf.sum(dim=0) + conf.sum(dim=1) - inter
    seen = union > 0
    return float((inter[seen] / union[seen]).mean()) if seen.any() else float("nan")


def pixel_accuracy(conf: Tensor) -> float:
    n = int(conf.sum())
    return float(torch.diagonal(conf).sum()) / n if n else float("nan")


def _bilinear_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A learned x``factor`` upsampler that starts as bilinear interpolation, channel by channel."""
    k = 2 * factor - 1
    up = nn.ConvTranspose2d(channels, channels, k, stride=factor, padding=factor - 1, output_padding=factor - 1,
                            bias=False)
    with torch.no_grad():
        up.weight.zero_()
        up.weight[range(channels), range(channels)] = bilinear_kernel(factor)
    return up


class SegNet(nn.Module):
    """FCN on a pretrained ResNet-18 (stride 32): x (N, 3, H, W) in [0, 1] -> (N, num_classes, H, W). Score maps at
    strides 32, 16, 8, 4 and 2, each fused into the one above it by a learned x2 upsampler (bilinear at start):
    FCN-8s taken down to stride 2, so that one small image can be memorised, borders included."""

    def __init__(self, num_classes: int = 21) -> None:
        super().__init__()
        resnet = torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu)  # /2 (64)
        self.pool = resnet.maxpool  # /4
        self.layers = nn.ModuleList([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])  # /4../32
        widths = (64, 64, 128, 256, 512)  # strides 2, 4, 8, 16, 32
        self.scores = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in widths)
        for score in self.scores[:-1]:  # skips start silent, as in FCN-8s
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
        self.ups = nn.ModuleList(_bilinear_upsampler(num_classes, 2) for _ in widths)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        N, C, H, W = x.shape
        x = F.pad((x - self.mean) / self.std, (0, (-W) % 32, 0, (-H) % 32))  # (N, 3, Hp, Wp), Hp = 32k
        feats = [self.stem(x)]  # (N, 64, Hp/2, Wp/2)
        f = self.pool(feats[0])  # (N, 64, Hp/4, Wp/4)
        for layer in self.layers:  # (N, 64, /4), (N, 128, /8), (N, 256, /16), (N, 512, /32)
            f = layer(f)
            feats.append(f)
        y = self.scores[-1](feats[-1])  # (N, K, Hp/32, Wp/32)
        for i in range(len(feats) - 2, -1, -1):  # strides 16, 8, 4, 2
            y = self.ups[i + 1](y) + self.scores[i](feats[i])  # (N, K, stride of feats[i])
        return self.ups[0](y)[:, :, :H, :W]  # (N, K, H, W)


def overfit_single_example(model: nn.Module, image: Tensor, target: Tensor, epochs: int) -> list[float]:
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(epochs):
        opt.zero_grad()
        loss = F.cross_entropy(model(image), target, ignore_index=VOID)
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def train(model: nn.Module, loader: torch.utils.data.DataLoader, epochs: int) -> list[float]:
    """Fine-tuning: Adam at a modest rate (a high one wrecks the pretrained features), cosine decay to zero."""
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(loader)))
    model.train()
    per_epoch = []
    for _ in range(epochs):
        losses = []
        for image, target in loader:
            image, target = image.to(device), target.to(device)
            loss = F.cross_entropy(model(image), target, ignore_index=VOID)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        per_epoch.append(sum(losses) / max(1, len(losses)))
    return per_epoch
