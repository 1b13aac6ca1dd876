"""PASCAL VOC 2012 segmentation on disk: the palette, paired transforms, the one loader, the hash.

The same loader serves the real dataset and the embedded one (``grader.data.shapes`` writes the same folder
layout), so whatever the grader measures on the embedded set it measures the same way on real VOC.
Masks are palette ("P") PNGs whose pixel values ARE the class ids (0..20) and 255 for void; they are
read with ``np.asarray`` and never scaled or interpolated (resizing uses NEAREST, padding uses 255).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch is imported inside the functions that need it: the palette and the class names
    import torch  # serve the grader's own process (reports), which never imports torch
    from torch.utils.data import DataLoader

__all__ = [
    "NUM_CLASSES", "IGNORE_INDEX", "VOC_CLASSES", "SPLITS", "VOCDatasetMissing", "voc_palette",
    "voc_folder", "PairedResize", "PairedCenterCrop", "PairedToArrays", "PairedCompose",
    "load_split", "to_tensors", "make_loader", "dataset_hash",
]

NUM_CLASSES = 21
IGNORE_INDEX = 255
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
SPLITS = ("train", "val", "trainval")  # the image sets VOCSegmentation accepts for 2012; others: _ListedSplit
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # a file of ImageSets/Segmentation, never a path
_VALID_LABELS = np.array(list(range(NUM_CLASSES)) + [IGNORE_INDEX], dtype=np.uint8)

Pair = tuple[Any, Any]  # (image, target): PIL images before PairedToArrays, arrays after


class VOCDatasetMissing(FileNotFoundError):
    """The VOC folder (or one of its parts) is not where the rubric says."""


def voc_palette() -> np.ndarray:
    """The standard VOC colormap (devkit's bitwise algorithm): (256, 3) uint8; 255 is (224, 224, 192)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):  # bit j of the index feeds bit (7 - j // 3) of r, g, b in turn
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[index] = (r, g, b)
    return palette


def voc_folder(root: Path) -> Path:
    """Where VOCSegmentation looks for the 2012 data under ``root``."""
    return Path(root) / "VOCdevkit" / "VOC2012"


def _missing_message(root: Path, split: str, what: Path) -> str:
    voc = voc_folder(root)
    return (
        f"PASCAL VOC 2012 not found: missing {what}. Expected the folder {voc} with JPEGImages/, "
        f"SegmentationClass/ and ImageSets/Segmentation/{split}.txt inside. Fix: point the rubric's "
        f"dataset.voc_root at the folder that CONTAINS VOCdevkit (here {Path(root)}), "
        f"or use the embedded dataset."
    )


def _check_layout(root: Path, split: str) -> None:
    voc = voc_folder(root)
    needed = (voc, voc / "JPEGImages", voc / "SegmentationClass",
              voc / "ImageSets" / "Segmentation" / f"{split}.txt")
    for path in needed:
        if not path.exists():
            raise VOCDatasetMissing(_missing_message(root, split, path))


def _pad(img: Image.Image, width: int, height: int, fill: int) -> Image.Image:
    """Pad right/bottom-centred to at least (width, height) with ``fill`` (0 for images, 255 for masks)."""
    w, h = img.size
    if w >= width and h >= height:
        return img
    out = Image.new(img.mode, (max(w, width), max(h, height)), (fill,) * 3 if img.mode == "RGB" else fill)
    if img.mode == "P":
        out.putpalette(img.getpalette() or voc_palette().ravel().tolist())
    out.paste(img, ((out.width - w) // 2, (out.height - h) // 2))
    return out


class PairedResize:
    """Resize so the SHORTER side equals ``size``: image BILINEAR, mask NEAREST (no invented labels)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image, target: Image.Image) -> Pair:
        w, h = image.size
        scale = self.size / min(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        return image.resize(new, Image.BILINEAR), target.resize(new, Image.NEAREST)


class PairedCenterCrop:
    """Centre-crop to size x size, padding first (image 0, mask 255) where the pair is smaller."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image, target: Image.Image) -> Pair:
        image, target = _pad(image, self.size, self.size, 0), _pad(target, self.size, self.size, IGNORE_INDEX)
        w, h = image.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        box = (left, top, left + self.size, top + self.size)
        return image.crop(box), target.crop(box)


class PairedToArrays:
    """PIL pair -> (uint8 (3, H, W), uint8 (H, W)); the mask's palette indices are taken as they are."""

    def __call__(self, image: Image.Image, target: Image.Image) -> Pair:
        img = np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
        mask = np.asarray(target)
        if mask.ndim != 2:  # an RGB-coloured mask would otherwise be silently misread as labels
            raise ValueError(f"segmentation mask must be a palette/greyscale PNG, got mode {target.mode}")
        return np.ascontiguousarray(img), mask.astype(np.uint8, copy=False)


class PairedCompose:
    """Apply paired transforms in order (torchvision references/segmentation style)."""

    def __init__(self, transforms: list[Any]) -> None:
        self.transforms = transforms

    def __call__(self, image: Any, target: Any) -> Pair:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target


def _transforms(size: int | None) -> PairedCompose:
    resize = [PairedResize(size), PairedCenterCrop(size)] if size is not None else []
    return PairedCompose([*resize, PairedToArrays()])


def _stack_same_size(pairs: list[Pair], ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    shapes = sorted({img.shape for img, _ in pairs})
    if len(shapes) > 1:
        raise ValueError(
            f"images have different sizes ({shapes[0][1:]} and {shapes[-1][1:]}, ...): "
            f"pass size=... to resize and centre-crop them"
        )
    for (img, mask), image_id in zip(pairs, ids):
        if mask.shape != img.shape[1:]:
            raise ValueError(f"{image_id}: mask {mask.shape} and image {img.shape[1:]} differ in size")
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def load_split(root: Path, split: str, *, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one image set as uint8 arrays: images (N, 3, S, S) and masks (N, S, S) with 0..20 and 255."""
    from torchvision.datasets import VOCSegmentation  # lazy: importing torchvision costs seconds

    if not _SPLIT_NAME.fullmatch(split):
        raise ValueError(f"split must name a list of ImageSets/Segmentation (e.g. one of {SPLITS}), got {split!r}")
    _check_layout(Path(root), split)
    make = VOCSegmentation if split in SPLITS else _ListedSplit
    dataset = make(str(root), year="2012", image_set=split, download=False, transforms=_transforms(size))
    ids = [Path(p).stem for p in dataset.images]
    if not ids:
        raise ValueError(f"{voc_folder(root)}/ImageSets/Segmentation/{split}.txt lists no images")
    pairs = [_read(dataset, i, ids[i]) for i in range(len(dataset))]
    return _stack_same_size(pairs, ids)


class _ListedSplit:
    """Another image set of the same folder (the embedded ``public_val``, a course's own list): read exactly as
    VOCSegmentation reads its three (the ids of ImageSets/Segmentation/<split>.txt, the JPEG converted to RGB,
    the palette PNG as it is), which refuses any other name."""

    def __init__(self, root: str, *, year: str, image_set: str, download: bool, transforms: Any) -> None:
        voc = voc_folder(Path(root))
        ids = (voc / "ImageSets" / "Segmentation" / f"{image_set}.txt").read_text().split()
        self.images = [str(voc / "JPEGImages" / f"{i}.jpg") for i in ids]
        self.targets = [str(voc / "SegmentationClass" / f"{i}.png") for i in ids]
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Pair:
        return self.transforms(Image.open(self.images[index]).convert("RGB"), Image.open(self.targets[index]))


def _read(dataset: Any, index: int, image_id: str) -> Pair:
    try:
        image, mask = dataset[index]
    except FileNotFoundError as err:  # a listed id without its .jpg/.png: name the file
        raise VOCDatasetMissing(f"{image_id}: {err}") from err
    bad = np.setdiff1d(np.unique(mask), _VALID_LABELS)
    if bad.size:
        raise ValueError(f"{image_id}: mask has values {bad.tolist()} outside 0..20 and 255")
    return image, mask


def to_tensors(images: np.ndarray, masks: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 arrays -> float32 images in [0, 1] (N, 3, H, W) and int64 masks (N, H, W)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    y = None if masks is None else torch.from_numpy(np.ascontiguousarray(masks)).to(torch.int64)
    return x, y


def make_loader(images: np.ndarray, masks: np.ndarray, *, batch_size: int, seed: int,
                shuffle: bool = True) -> DataLoader:
    """A single-process DataLoader whose batch order is fixed by ``seed``."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = to_tensors(images, masks)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, num_workers=0,
                      drop_last=False, generator=generator)


def _hashed_files(voc: Path) -> list[Path]:
    """The split lists and every image/mask they name: what the loader can read, not all of VOCdevkit."""
    lists = sorted((voc / "ImageSets" / "Segmentation").glob("*.txt"))
    ids = sorted({line.strip() for f in lists for line in f.read_text().splitlines() if line.strip()})
    named = [voc / sub / f"{i}{ext}" for i in ids
             for sub, ext in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png"))]
    return sorted([*lists, *(p for p in named if p.is_file())])


def dataset_hash(root: Path) -> str:
    """sha256 over sorted relative paths and bytes of the segmentation files under root/VOCdevkit/VOC2012."""
    voc = voc_folder(root)
    if not voc.is_dir():
        raise VOCDatasetMissing(_missing_message(Path(root), "train", voc))
    digest = hashlib.sha256()
    for path in _hashed_files(voc):
        data = path.read_bytes()
        rel = path.relative_to(voc).as_posix().encode()
        digest.update(len(rel).to_bytes(8, "little") + rel + len(data).to_bytes(8, "little"))
        digest.update(data)  # lengths first: no two different file sets produce the same byte stream
    return digest.hexdigest()
