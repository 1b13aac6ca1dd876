"""The embedded dataset generator, the VOC loader and the paired transforms, on real files under tmp_path."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from grader.data import shapes
from grader.data.evalsecret import KEY_FILE
from grader.data.dataset import (
    IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES, VOCDatasetMissing, dataset_hash, embedded_voc_root,
    generate_embedded_voc, load_split, make_loader, to_tensors, voc_palette,
)
from grader.core.voc import PairedCenterCrop, PairedResize
from grader.data.colourrule import colour_rule_scores
from grader.data.shapes import PUBLIC_VAL_IMAGES

VALID = set(range(NUM_CLASSES)) | {IGNORE_INDEX}
SHAPE_IDS = {c.class_id for c in shapes.SHAPE_CLASSES}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_embedded_voc(tmp_path_factory.mktemp("emb"), n_train=24, n_val=8, size=48, seed=3)


def _voc(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012"


def _ids(root: Path, split: str) -> list[str]:
    return (_voc(root) / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_palette_is_the_standard_voc_colormap() -> None:
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert pal[15].tolist() == [192, 128, 128]  # person
    assert pal[255].tolist() == [224, 224, 192]
    assert len(VOC_CLASSES) == NUM_CLASSES == 21 and VOC_CLASSES[0] == "background"


def test_layout_is_what_voc_segmentation_reads(small_root: Path) -> None:
    from torchvision.datasets import VOCSegmentation

    voc = _voc(small_root)
    assert len(_ids(small_root, "train")) == 24 and len(_ids(small_root, "val")) == 8
    assert _ids(small_root, "trainval") == _ids(small_root, "train") + _ids(small_root, "val")
    for image_id in _ids(small_root, "val"):
        assert (voc / "JPEGImages" / f"{image_id}.jpg").is_file()
        assert (voc / "SegmentationClass" / f"{image_id}.png").is_file()
    ds = VOCSegmentation(str(small_root), year="2012", image_set="val", download=False)
    image, target = ds[0]
    assert len(ds) == 8 and image.size == (48, 48) and target.mode == "P"
    assert Image.open(ds.images[0]).format == "JPEG"


def test_same_seed_is_byte_identical_other_seed_differs(tmp_path: Path) -> None:
    a = generate_embedded_voc(tmp_path / "a", n_train=6, n_val=3, size=32, seed=7)
    b = generate_embedded_voc(tmp_path / "b", n_train=6, n_val=3, size=32, seed=7)
    c = generate_embedded_voc(tmp_path / "c", n_train=6, n_val=3, size=32, seed=8)
    assert _files(a) == _files(b) and len(_files(a)) == 2 * (9 + PUBLIC_VAL_IMAGES) + 4  # 4 lists: +public_val
    assert dataset_hash(a) == dataset_hash(b) != dataset_hash(c)
    assert _files(a)["VOCdevkit/VOC2012/JPEGImages/shapes_train_00000.jpg"] != \
        _files(c)["VOCdevkit/VOC2012/JPEGImages/shapes_train_00000.jpg"]


def test_train_images_do_not_depend_on_the_val_count(tmp_path: Path) -> None:
    a = generate_embedded_voc(tmp_path / "a", n_train=3, n_val=1, size=32)
    b = generate_embedded_voc(tmp_path / "b", n_train=3, n_val=5, size=32)
    png = "VOCdevkit/VOC2012/SegmentationClass/shapes_train_00002.png"
    assert _files(a)[png] == _files(b)[png]


def test_the_public_validation_split_is_drawn_from_the_seed_whatever_the_key(tmp_path: Path) -> None:
    """public_val (the report's 2x2 shows its first picture with its labels) is the same for every installation
    key and overlaps neither the keyed evaluation split nor the training split."""
    keyed = [generate_embedded_voc(tmp_path / k, n_train=4, n_val=3, size=32, seed=2, secret=k.encode() * 16)
             for k in ("aa", "bb")]
    public = [load_split(root, "public_val", size=32) for root in keyed]
    assert len(public[0][0]) == PUBLIC_VAL_IMAGES
    from grader import rubric

    assert shapes.PUBLIC_VAL_SPLIT == rubric.PUBLIC_VAL_SPLIT == "public_val"  # the generator's name, the rubric's
    assert all(np.array_equal(x, y) for x, y in zip(public[0], public[1]))
    for other in ("val", "train"):
        images, _ = load_split(keyed[0], other, size=32)
        assert not any(np.array_equal(i, p) for i in images for p in public[0][0]), other


def test_masks_are_palette_pngs_of_class_ids(small_root: Path) -> None:
    for image_id in _ids(small_root, "trainval"):
        png = Image.open(_voc(small_root) / "SegmentationClass" / f"{image_id}.png")
        assert png.mode == "P"
        assert png.getpalette()[:256 * 3] == voc_palette().ravel().tolist()
        assert set(np.unique(np.asarray(png)).tolist()) <= {0, IGNORE_INDEX} | SHAPE_IDS


def test_every_object_has_a_two_pixel_void_border(small_root: Path) -> None:
    for image_id in _ids(small_root, "trainval"):
        mask = np.asarray(Image.open(_voc(small_root) / "SegmentationClass" / f"{image_id}.png"))
        assert (mask == IGNORE_INDEX).any() and (set(np.unique(mask).tolist()) & SHAPE_IDS)
        padded = np.pad(mask, 2, constant_values=IGNORE_INDEX)
        h, w = mask.shape
        for dy in range(5):  # within 2 px of a labelled pixel: the same label or void, nothing else
            for dx in range(5):
                near = padded[dy:dy + h, dx:dx + w]
                clash = (mask != IGNORE_INDEX) & (near != IGNORE_INDEX) & (near != mask)
                assert not clash.any(), f"{image_id}: labels {mask[clash][:3]} touch {near[clash][:3]}"


def test_objects_cover_a_fair_share_and_all_six_classes_appear(small_root: Path) -> None:
    _, masks = load_split(small_root, "trainval")
    counts = np.bincount(masks.ravel(), minlength=256)
    labelled = counts[:NUM_CLASSES].sum()
    assert counts[0] / labelled < 0.85  # the all-background predictor must stay well below a real one
    assert set(np.flatnonzero(counts[1:NUM_CLASSES]) + 1) == SHAPE_IDS


@pytest.mark.parametrize("seed", [0, 1])
def test_colour_alone_scores_no_better_than_all_background(tmp_path: Path, seed: int) -> None:
    """The best per-pixel colour rule, fitted on the training pixels (tests/rubric_small.yaml's sizes), stays
    within 0.05 mIoU of the all-background floor on the validation images: the class is in the shape and the
    texture, which only a net that looks at neighbourhoods (a trained one) sees. Generator 1's colour families
    gave the same rule 0.70-0.77 against a floor of 0.11 (bench/README.md)."""
    root = generate_embedded_voc(tmp_path, n_train=96, n_val=24, size=64, seed=seed, secret=bytes([seed]) * 32)
    train, val = load_split(root, "train"), load_split(root, "val")
    for bins in (8, 16):
        got = colour_rule_scores(train, val, bins=bins)
        assert 0.05 < got.floor < 0.2
        assert got.majority <= got.floor + 0.05 and got.balanced <= got.floor + 0.05, got


def test_every_class_and_the_background_draw_from_one_colour_distribution(tmp_path: Path) -> None:
    """Each channel's mean and spread per class agree with the background's: no class is brighter, more
    saturated or of another hue family. About 100 objects per class, each one or two colours: sample noise
    alone moves a mean by up to ~18 grey levels; generator 1's hue families differed by 70-78."""
    root = generate_embedded_voc(tmp_path, n_train=240, n_val=1, size=48, seed=5)
    images, masks = load_split(root, "train")
    rgb = images.transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64)
    labels = masks.ravel()
    stats = {}
    for cls in [0, *sorted(SHAPE_IDS)]:
        px = rgb[labels == cls]
        stats[cls] = np.concatenate([px.mean(0), px.std(0)])
    for cls, got in stats.items():
        assert np.abs(got - stats[0]).max() < 30, (cls, got.round(1), stats[0].round(1))


def test_loader_returns_masks_unscaled(small_root: Path) -> None:
    images, masks = load_split(small_root, "val")
    assert images.shape == (8, 3, 48, 48) and images.dtype == np.uint8
    assert masks.shape == (8, 48, 48) and masks.dtype == np.uint8
    assert set(np.unique(masks).tolist()) <= VALID
    first = _ids(small_root, "val")[0]
    raw = np.asarray(Image.open(_voc(small_root) / "SegmentationClass" / f"{first}.png"))
    np.testing.assert_array_equal(masks[0], raw)
    jpg = np.asarray(Image.open(_voc(small_root) / "JPEGImages" / f"{first}.jpg")).transpose(2, 0, 1)
    np.testing.assert_array_equal(images[0], jpg)


def test_resizing_keeps_masks_nearest(small_root: Path) -> None:
    _, full = load_split(small_root, "val")
    images, masks = load_split(small_root, "val", size=30)
    assert images.shape == (8, 3, 30, 30) and masks.shape == (8, 30, 30)
    for small, big in zip(masks, full):
        assert set(np.unique(small).tolist()) <= set(np.unique(big).tolist())


def test_center_crop_pads_masks_with_void_and_images_with_zero() -> None:
    image = Image.new("RGB", (30, 20), (200, 100, 50))
    target = Image.fromarray(np.full((20, 30), 7, dtype=np.uint8))
    target.putpalette(voc_palette().ravel().tolist())
    image, target = PairedCenterCrop(40)(image, target)
    img, mask = np.asarray(image), np.asarray(target)
    assert img.shape == (40, 40, 3) and mask.shape == (40, 40) and target.mode == "P"
    assert set(np.unique(mask).tolist()) == {7, IGNORE_INDEX}
    assert (mask[:10] == IGNORE_INDEX).all() and (mask[:, :5] == IGNORE_INDEX).all()
    assert (img[:10] == 0).all() and (mask[10:30, 5:35] == 7).all()


def test_resize_sets_the_shorter_side() -> None:
    image, target = Image.new("RGB", (70, 50)), Image.new("L", (70, 50))
    image, target = PairedResize(25)(image, target)
    assert image.size == target.size == (35, 25)


def _hand_made_voc(root: Path) -> None:
    """Two 'real VOC' pictures of different sizes, named like VOC ids, with P-mode masks."""
    voc = _voc(root)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id, (w, h), label in (("2007_000032", (50, 70), 15), ("2007_000033", (80, 60), 1)):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[h // 4:3 * h // 4, w // 4:3 * w // 4] = label
        mask[h // 4, w // 4:3 * w // 4] = IGNORE_INDEX
        png = Image.fromarray(mask)
        png.putpalette(voc_palette().ravel().tolist())
        png.save(voc / "SegmentationClass" / f"{image_id}.png")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n2007_000033\n")


def test_hand_made_real_voc_folder_loads_with_size(tmp_path: Path) -> None:
    _hand_made_voc(tmp_path)
    images, masks = load_split(tmp_path, "train", size=48)
    assert images.shape == (2, 3, 48, 48) and masks.shape == (2, 48, 48)
    assert set(np.unique(masks[0]).tolist()) == {0, 15, IGNORE_INDEX}
    assert set(np.unique(masks[1]).tolist()) == {0, 1, IGNORE_INDEX}
    assert masks[0, 24, 24] == 15 and masks[1, 24, 24] == 1 and masks[1, 0, 0] == 0
    with pytest.raises(ValueError, match="size="):
        load_split(tmp_path, "train")


def test_missing_root_names_the_expected_folder(tmp_path: Path) -> None:
    with pytest.raises(VOCDatasetMissing) as err:
        load_split(tmp_path / "nowhere", "train")
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "VOCdevkit" / "VOC2012") in message
    assert "ImageSets/Segmentation/train.txt" in message and "dataset.voc_root" in message
    assert "embedded" in message
    assert isinstance(err.value, FileNotFoundError)


def test_missing_split_file_is_named(tmp_path: Path) -> None:
    _hand_made_voc(tmp_path)
    with pytest.raises(VOCDatasetMissing, match="val.txt"):
        load_split(tmp_path, "val")


def test_any_listed_split_reads_as_torchvision_reads_its_own(small_root: Path) -> None:
    """A split torchvision's VOCSegmentation does not know (the embedded public_val, a course's own list) is read
    the same way: the val list under another name gives the very same arrays."""
    lists = _voc(small_root) / "ImageSets" / "Segmentation"
    (lists / "course_val.txt").write_text((lists / "val.txt").read_text())
    for size in (None, 40):
        ours, torchvisions = load_split(small_root, "course_val", size=size), load_split(small_root, "val", size=size)
        assert all(np.array_equal(a, b) for a, b in zip(ours, torchvisions))
    for bad in ("../val", "/etc/passwd", ".hidden", ""):
        with pytest.raises(ValueError, match="split must name a list"):
            load_split(small_root, bad)
    with pytest.raises(VOCDatasetMissing, match="nothere.txt"):
        load_split(small_root, "nothere")


def test_to_tensors_scales_images_and_keeps_labels() -> None:
    images = np.array([[[[0, 255]]] * 3], dtype=np.uint8)  # (1, 3, 1, 2)
    masks = np.array([[[3, 255]]], dtype=np.uint8)
    x, y = to_tensors(images, masks)
    assert x.dtype == torch.float32 and x.shape == (1, 3, 1, 2) and x.max() == 1.0 and x.min() == 0.0
    assert y is not None and y.dtype == torch.int64 and y.tolist() == [[[3, 255]]]
    assert to_tensors(images, None)[1] is None


def test_make_loader_order_is_reproducible() -> None:
    images = np.arange(10, dtype=np.uint8).repeat(3 * 2 * 2).reshape(10, 3, 2, 2)
    masks = np.arange(10, dtype=np.uint8).repeat(4).reshape(10, 2, 2)

    def order(seed: int) -> list[list[int]]:
        return [y[:, 0, 0].tolist() for _, y in make_loader(images, masks, batch_size=4, seed=seed)]

    assert order(1) == order(1) != order(2)
    assert [len(b) for b in order(1)] == [4, 4, 2]  # drop_last=False
    plain = [y[:, 0, 0].tolist() for _, y in make_loader(images, masks, batch_size=4, seed=1, shuffle=False)]
    assert plain == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_dataset_hash_sees_a_changed_byte(tmp_path: Path) -> None:
    root = generate_embedded_voc(tmp_path, n_train=2, n_val=1, size=16)
    before = dataset_hash(root)
    png = _voc(root) / "SegmentationClass" / "shapes_val_00000.png"
    png.write_bytes(png.read_bytes() + b"\0")
    assert dataset_hash(root) != before
    with pytest.raises(VOCDatasetMissing):
        dataset_hash(tmp_path / "nowhere")


def test_embedded_root_is_cached_under_the_env_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEG_GRADER_CACHE", str(tmp_path / "cache"))
    first = embedded_voc_root(n_train=2, n_val=1, size=16)
    stamp = (_voc(first) / "ImageSets" / "Segmentation" / "train.txt").stat().st_mtime_ns
    second = embedded_voc_root(n_train=2, n_val=1, size=16)
    assert first == second and first.parent == tmp_path / "cache"
    assert f"g{shapes.GENERATOR_VERSION}" in first.name and "seed0" in first.name
    assert (_voc(first) / "ImageSets" / "Segmentation" / "train.txt").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([first.name, KEY_FILE])  # no temp dirs
    assert load_split(first, "train")[1].shape == (2, 16, 16)


def test_embedded_root_uses_the_winner_when_it_loses_the_race(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = shapes.generate_embedded_voc

    def slow_loser(root: Path, **kw) -> Path:
        # another process finishes first, while this one is still generating
        winner = tmp_path / Path(root).name.split(".")[1]  # the temp folder is ".<final name>.<random>"
        real(winner, **kw)
        return real(root, **kw)

    monkeypatch.setattr(shapes, "generate_embedded_voc", slow_loser)
    root = embedded_voc_root(cache_dir=tmp_path, n_train=2, n_val=1, size=16)
    assert root.name.startswith("embedded-voc-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([root.name, KEY_FILE])
    assert len(_ids(root, "train")) == 2


def test_concurrent_callers_agree(tmp_path: Path) -> None:
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(
        embedded_voc_root(cache_dir=tmp_path, n_train=3, n_val=1, size=16))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([results[0].name, KEY_FILE])
    secret = (tmp_path / KEY_FILE).read_bytes()
    assert dataset_hash(results[0]) == dataset_hash(generate_embedded_voc(tmp_path / "x", n_train=3,
                                                                          n_val=1, size=16, secret=secret))


def test_default_generation_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    root = generate_embedded_voc(tmp_path)
    assert time.perf_counter() - start < 5.0
    assert len(_ids(root, "train")) == 240 and len(_ids(root, "val")) == 60
