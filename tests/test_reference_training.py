"""The reference trains: it memorises one example, and it learns the embedded shapes set.

These are the bars the rubric's overfit and full-training checks rest on; a reference that missed them
would make those checks unfair. Thread count fixed at the CI's two cores.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.data.dataset import IGNORE_INDEX, NUM_CLASSES, generate_embedded_voc, load_split, make_loader, to_tensors
from reference.segmentation import SegNet, confusion_matrix, mean_iou, overfit_single_example, pixel_accuracy, train

pytestmark = pytest.mark.slow

OVERFIT_EPOCHS, OVERFIT_LOSS, OVERFIT_ACCURACY = 40, 0.05, 0.95
TRAIN_EPOCHS, TRAIN_BATCH = 24, 16  # rubric.yaml's full_training
# Generator 2 (colour says nothing, shapes and textures do), measured at these settings on the public split
# over seeds 0-2 (eval mode, dataset-level matrix): 0.388, 0.398, 0.422; bar = worst - 0.05, rounded down. The
# all-background floor is 0.108, the best per-pixel colour rule 0.104-0.115 (tests/test_dataset.py); rubric.yaml's
# bar is 0.17.
MIOU_BAR = 0.33


@pytest.fixture(autouse=True)
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded set with its PUBLIC (seed-drawn) evaluation split, on which MIOU_BAR was measured: a
    grader's split is drawn from its installation key, a new one in every test session."""
    return generate_embedded_voc(tmp_path_factory.mktemp("embedded-voc"))


def _rich_example(masks: np.ndarray) -> int:
    """The first training mask with at least two foreground classes: a harder target than one shape."""
    for i, mask in enumerate(masks):
        if len(set(np.unique(mask).tolist()) - {0, IGNORE_INDEX}) >= 2:
            return i
    raise AssertionError("the embedded set has no image with two object classes")


@pytest.fixture(scope="module")
def example(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    # 128x128: a stride-8 encoder still sees a 16x16 map, enough to place every shape.
    images, masks = load_split(root, "train", size=128)
    i = _rich_example(masks)
    return to_tensors(images[i:i + 1], masks[i:i + 1])


@pytest.mark.parametrize("seed", range(5))
def test_reference_overfits_one_example(example: tuple[torch.Tensor, torch.Tensor], seed: int) -> None:
    image, target = example
    torch.manual_seed(seed)
    net = SegNet()
    losses = overfit_single_example(net, image, target, OVERFIT_EPOCHS)
    assert len(losses) == OVERFIT_EPOCHS and all(isinstance(v, float) for v in losses)
    assert min(losses) < OVERFIT_LOSS and losses[-1] < OVERFIT_LOSS
    assert net.training, "overfit_single_example must leave the model in train mode"
    with torch.no_grad():
        pred = net(image).argmax(1)  # (1, H, W), train mode: what the rubric's check sees by default
    assert pixel_accuracy(confusion_matrix(pred, target, NUM_CLASSES)) >= OVERFIT_ACCURACY


def _validation_miou(net: torch.nn.Module, root: Path) -> float:
    images, masks = load_split(root, "val")
    x, y = to_tensors(images, masks)
    net.eval()
    with torch.no_grad():
        pred = net(x).argmax(1)  # (N, H, W)
    return mean_iou(confusion_matrix(pred, y, NUM_CLASSES))


def test_reference_learns_the_embedded_set(root: Path) -> None:
    images, masks = load_split(root, "train")
    torch.manual_seed(0)
    net = SegNet()
    history = train(net, make_loader(images, masks, batch_size=TRAIN_BATCH, seed=0), TRAIN_EPOCHS)
    assert len(history) == TRAIN_EPOCHS and history[-1] < history[0]
    assert net.training
    assert _validation_miou(net, root) >= MIOU_BAR
