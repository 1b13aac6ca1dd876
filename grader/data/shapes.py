"""The embedded dataset: textured shapes on textured backgrounds, written in the real VOC 2012 layout.

Colour says nothing of the class: every region of a picture (the background and each object, whatever its
class) draws its two colours from ONE distribution (``_any_colour``; all colours of a picture pairwise at least
``_MIN_CONTRAST`` apart, a rule that treats them all alike), with the same light gradient and noise. The class is
carried by the shape (disc, ring, triangle, bar, cross, square) and, two classes to each, by a two-tone texture
(stripes, checks, flat); backgrounds are flat or blotched. So the best per-pixel colour rule scores the
all-background floor (``grader.data.colourrule``, ``bench/colour_baseline.py``) and full points need a net that
learnt shapes. (Generator 1 gave each class a hue family: a per-pixel colour rule scored 0.77 mIoU, floor 0.11.)
Every object boundary (also where objects overlap, and the inside edge of a ring) is a 2-pixel void band of 255,
as in VOC's SegmentationClass masks. Each image draws from its own numpy Generator, so an image does not change
when the other split grows:

- the TRAINING split from (seed, 0, index): the rubric's seed alone. It is public on purpose: its images and
  masks are in every job folder anyway, and students may regenerate it to reproduce a run.
- the EVALUATION (val) split, in the grader's cache (``embedded_voc_root``), from (HMAC-SHA256(installation
  secret, generator version and seed), index): the secret is ``grader.data.evalsecret``'s per-installation key,
  which the sandbox never sees. Knowing the generator and the rubric (its seed) is not enough to regenerate
  the evaluation masks, so a ``train`` that rebuilds them instead of learning finds nothing to copy. The
  cache folder is named after a digest of the derived val key (the secret's effect, never the secret), so a
  new key makes a new folder. ``generate_embedded_voc`` without a secret draws val from (seed, 1, index): a
  public set for tests and self-checks, never what the grader evaluates on.
- the PUBLIC VALIDATION split (``public_val``, ``PUBLIC_VAL_IMAGES`` pictures) from (seed, 2, index): public like
  the training split and seen by no training. The report's 2x2 (``grader.report.contrast``) shows its first
  picture with its ground truth beside the overfit example: what the keyed split's labels must never be.
"""
from __future__ import annotations

import colorsys
import hashlib
import hmac
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from grader.data.evalsecret import default_cache_dir, installation_secret
from grader.core.voc import IGNORE_INDEX, VOC_CLASSES, voc_folder, voc_palette

__all__ = ["GENERATOR_VERSION", "PUBLIC_VAL_IMAGES", "PUBLIC_VAL_SPLIT", "ShapeClass", "SHAPE_CLASSES", "render_example",
           "val_key", "generate_embedded_voc", "embedded_voc_root", "default_cache_dir"]

GENERATOR_VERSION = 2  # bump when the pictures change: it names the cache folder
PUBLIC_VAL_IMAGES = 4  # the public validation split's size (the report's 2x2 shows its first picture)
# its name, as grader.rubric.PUBLIC_VAL_SPLIT says it (the rubric, stdlib only, cannot import this module, and this
# module imports nothing of grader but voc and evalsecret: a student may copy the three; tests/test_dataset.py checks
# the two agree)
PUBLIC_VAL_SPLIT = "public_val"
_SATURATION, _VALUE = (0.25, 1.0), (0.35, 1.0)  # HSV ranges of the one colour distribution
_MIN_CONTRAST = 60.0  # RGB distance between any two colours of one picture
_BACKGROUND_TEXTURES = ("flat", "blotches")  # an object's texture (ShapeClass.texture) is one of _PATTERNS
_SHADE = 0.35  # light gradient across the picture, as a fraction of the colour
_NOISE = 6.0  # pixel noise, grey levels
_MAX_LAYOUT_TRIES = _MAX_COLOUR_TRIES = 20


@dataclass(frozen=True)
class ShapeClass:
    class_id: int  # VOC index
    shape: str  # one of the _SHAPES rasterisers
    texture: str  # one of the _PATTERNS, shared by two classes: it narrows the class down, the shape decides


SHAPE_CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass(VOC_CLASSES.index("cat"), "disc", "stripes"),
    ShapeClass(VOC_CLASSES.index("bicycle"), "ring", "stripes"),
    ShapeClass(VOC_CLASSES.index("bird"), "triangle", "checks"),
    ShapeClass(VOC_CLASSES.index("bottle"), "bar", "checks"),
    ShapeClass(VOC_CLASSES.index("aeroplane"), "cross", "flat"),
    ShapeClass(VOC_CLASSES.index("tvmonitor"), "square", "flat"),
)


def _disc(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return u * u + v * v <= r * r


def _ring(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return _disc(u, v, r) & ~_disc(u, v, 0.5 * r)


def _square(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r


def _bar(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return (np.abs(u) <= r) & (np.abs(v) <= 0.38 * r)


def _cross(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return _bar(u, v * 0.38 / 0.3, r) | _bar(v, u * 0.38 / 0.3, r)  # two arms, half-width 0.3 r


def _triangle(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    inside = np.ones(u.shape, dtype=bool)
    for k in range(3):  # equilateral, circumradius r: three half-planes at the inradius r / 2
        a = np.pi / 2 + 2 * np.pi * k / 3
        inside &= -(u * np.cos(a) + v * np.sin(a)) <= r / 2
    return inside


_SHAPES = {"disc": _disc, "ring": _ring, "square": _square, "triangle": _triangle, "cross": _cross,
           "bar": _bar}


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h / 360.0) % 1.0, s, v)) * 255.0


def _any_colour(rng: np.random.Generator) -> np.ndarray:
    """THE colour distribution: every region (the background and every object, whatever its class) draws here."""
    return _hsv(rng.uniform(0, 360), rng.uniform(*_SATURATION), rng.uniform(*_VALUE))


def _region_colours(rng: np.random.Generator, regions: int) -> np.ndarray:
    """(regions, 2, 3): two colours per region, every one from ``_any_colour``, all pairwise at least
    ``_MIN_CONTRAST`` apart (so each object stands out from what surrounds it). The rejection treats all colours
    alike, so the draw is exchangeable: background and every class keep the same colour distribution."""
    for _ in range(_MAX_COLOUR_TRIES):
        colours = np.stack([_any_colour(rng) for _ in range(2 * regions)])
        gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
        if gaps[np.triu_indices(len(colours), 1)].min() >= _MIN_CONTRAST:
            break
    return colours.reshape(regions, 2, 3)


def _rotated(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    phi = rng.uniform(0, np.pi)
    return xx * np.cos(phi) + yy * np.sin(phi), -xx * np.sin(phi) + yy * np.cos(phi)


def _flat(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.zeros((size, size), dtype=bool)


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    u, _ = _rotated(rng, size)
    return np.sin(2 * np.pi * u / rng.uniform(5.0, 9.0) + rng.uniform(0, 6.3)) > 0


def _checks(rng: np.random.Generator, size: int) -> np.ndarray:
    u, v = _rotated(rng, size)
    cell = rng.uniform(3.0, 5.0)
    return (np.floor(u / cell) + np.floor(v / cell)) % 2 == 1


def _blotches(rng: np.random.Generator, size: int) -> np.ndarray:
    k = int(rng.integers(3, 6))  # smooth noise, thresholded at its median: a few large blobs
    grid = (rng.random((k, k)) * 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), dtype=np.float64)
    return smooth > np.median(smooth)


# Which of a region's two colours each pixel takes: two-tone, never blended, so a textured region's pixels keep
# the one colour distribution.
_PATTERNS = {"flat": _flat, "stripes": _stripes, "checks": _checks, "blotches": _blotches}


def _shading(rng: np.random.Generator, size: int) -> np.ndarray:
    """(S, S) soft light gradient: no region is one flat colour."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    g = rng.uniform(-_SHADE, _SHADE, size=2)
    return 1.0 + g[0] * yy + g[1] * xx


def _region(rng: np.random.Generator, colours: np.ndarray, size: int, texture: str) -> np.ndarray:
    """(S, S, 3) float: one region's paint (the same colours and light for the background and every class)."""
    two_tone = _PATTERNS[texture](rng, size)
    paint = np.where(two_tone[..., None], colours[1], colours[0])
    return paint * _shading(rng, size)[..., None]


def _draw_shape(rng: np.random.Generator, cls: ShapeClass, size: int) -> np.ndarray:
    """A random pose of the class's shape: (S, S) bool."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    r = rng.uniform(0.2, 0.34) * size
    cy, cx = rng.uniform(0.6 * r, size - 0.6 * r, size=2)  # may run a little off the edge, as in photos
    theta = rng.uniform(0, 2 * np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)  # rotated frame of the shape
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    return _SHAPES[cls.shape](u, v, r)


def _layout(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[ShapeClass]]:
    """Instance map (-1 = background) and the class of each instance; later objects occlude earlier."""
    n = int(rng.integers(1, 4))
    for _ in range(_MAX_LAYOUT_TRIES):
        inst = np.full((size, size), -1, dtype=np.int16)
        classes = [SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))] for _ in range(n)]
        areas = []
        for k, cls in enumerate(classes):
            shape = _draw_shape(rng, cls, size)
            inst[shape] = k
            areas.append(int(shape.sum()))
        visible = np.bincount(inst[inst >= 0], minlength=n)
        if all(visible[k] >= 0.5 * areas[k] > 0 for k in range(n)):
            break  # else retry: a mostly hidden object would be a few void-ringed pixels
    return inst, classes


def _void_band(inst: np.ndarray) -> np.ndarray:
    """True where a 3x3 neighbour belongs to another instance: 1 px each side of every boundary."""
    padded = np.pad(inst, 1, mode="edge")
    h, w = inst.shape
    band = np.zeros(inst.shape, dtype=bool)
    for dy in range(3):
        for dx in range(3):
            band |= padded[dy:dy + h, dx:dx + w] != inst
    return band


def render_example(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One picture: uint8 image (S, S, 3) and uint8 mask (S, S) with class ids and 255 on boundaries."""
    inst, classes = _layout(rng, size)
    colours = _region_colours(rng, 1 + len(classes))  # region 0: the background
    background = _BACKGROUND_TEXTURES[int(rng.integers(len(_BACKGROUND_TEXTURES)))]
    image = _region(rng, colours[0], size, background)
    for k in range(len(classes)):
        where = inst == k
        image[where] = _region(rng, colours[k + 1], size, classes[k].texture)[where]
    image = np.clip(image + rng.normal(0.0, _NOISE, image.shape), 0, 255).astype(np.uint8)
    lut = np.array([0] + [c.class_id for c in classes], dtype=np.uint8)
    mask = lut[inst.astype(np.int64) + 1]
    mask[_void_band(inst)] = IGNORE_INDEX
    return image, mask


def _write_pair(voc: Path, image_id: str, image: np.ndarray, mask: np.ndarray, palette: list[int]) -> None:
    Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
    png = Image.fromarray(mask)
    png.putpalette(palette)  # L -> P: pixel values stay the class ids, the palette only colours them
    png.save(voc / "SegmentationClass" / f"{image_id}.png")


def val_key(secret: bytes, seed: int) -> bytes:
    """The evaluation split's 32-byte key: one-way from the installation secret, per seed and generator."""
    message = f"seg-autograder embedded val split\0g{GENERATOR_VERSION}\0seed{seed}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def _rng(split_index: int, index: int, seed: int, key: bytes | None) -> np.random.Generator:
    if split_index == 1 and key is not None:  # val: the key's 256 bits are the entropy, not the seed's
        return np.random.default_rng([int.from_bytes(key, "big"), index])
    return np.random.default_rng([seed, split_index, index])


def generate_embedded_voc(root: Path, *, n_train: int = 240, n_val: int = 60, size: int = 64,
                          seed: int = 0, secret: bytes | None = None) -> Path:
    """Write the shapes dataset under root/VOCdevkit/VOC2012 (JPEGImages, SegmentationClass, ImageSets).
    With ``secret`` the val split is drawn from ``val_key(secret, seed)``, else from the seed (public); the
    public_val split always from the seed (split index 2)."""
    voc = voc_folder(root)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    palette = voc_palette().ravel().tolist()
    key = val_key(secret, seed) if secret is not None else None
    ids: dict[str, list[str]] = {}
    splits = (("train", n_train), ("val", n_val), (PUBLIC_VAL_SPLIT, PUBLIC_VAL_IMAGES))
    for split_index, (split, count) in enumerate(splits):
        ids[split] = [f"shapes_{split}_{i:05d}" for i in range(count)]
        for i, image_id in enumerate(ids[split]):
            image, mask = render_example(_rng(split_index, i, seed, key), size)
            _write_pair(voc, image_id, image, mask, palette)
    ids["trainval"] = ids["train"] + ids["val"]
    for split, names in ids.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return Path(root)


def embedded_voc_root(*, cache_dir: Path | None = None, n_train: int = 240, n_val: int = 60,
                      size: int = 64, seed: int = 0) -> Path:
    """The embedded dataset's root (the folder containing VOCdevkit), generated once per parameters and
    installation secret (read from, or created in, the cache folder: trusted callers only)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    secret = installation_secret(cache)
    effect = hashlib.sha256(b"folder\0" + val_key(secret, seed)).hexdigest()[:12]  # not the key: a digest
    final = cache / (f"embedded-voc-g{GENERATOR_VERSION}-train{n_train}-val{n_val}-public{PUBLIC_VAL_IMAGES}-"
                     f"size{size}-seed{seed}-eval{effect}")
    if final.is_dir():  # only ever created by the atomic rename below, so it is complete
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache))
    try:
        generate_embedded_voc(tmp, n_train=n_train, n_val=n_val, size=size, seed=seed, secret=secret)
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        # another process renamed its copy first: identical bytes, so use the winner's
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
