"""The embedded evaluation split comes from a per-installation secret: not from anything the sandbox can read."""
from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from grader.data import evalsecret
from grader.data import shapes
from grader.data.evalsecret import KEY_BYTES, KEY_FILE, EvalSecretError, installation_secret, secret_fingerprint
from grader.job.cache import cache_key
from grader.rubric import load_rubric, rubric_yaml
from grader.data.shapes import embedded_voc_root, generate_embedded_voc
from grader.core.voc import load_split

SMALL = dict(n_train=3, n_val=4, size=32)
TEST_RUBRIC = Path(__file__).parent / "rubric_small.yaml"


def _split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    return load_split(root, split)


def test_different_keys_give_different_val_splits_and_the_same_key_the_same(tmp_path: Path) -> None:
    a = embedded_voc_root(cache_dir=tmp_path / "a", **SMALL)
    b = embedded_voc_root(cache_dir=tmp_path / "b", **SMALL)
    (tmp_path / "c").mkdir()  # the same key copied to another cache folder: regenerated identically
    (tmp_path / "c" / KEY_FILE).write_bytes((tmp_path / "a" / KEY_FILE).read_bytes())
    c = embedded_voc_root(cache_dir=tmp_path / "c", **SMALL)
    val_a, val_b, val_c = _split(a, "val"), _split(b, "val"), _split(c, "val")
    for i in range(SMALL["n_val"]):  # every evaluation image and mask differs between installations
        assert not np.array_equal(val_a[0][i], val_b[0][i]) and not np.array_equal(val_a[1][i], val_b[1][i])
    assert all(np.array_equal(x, y) for x, y in zip(val_a, val_c))
    assert a.name == c.name != b.name  # the folder names the key's effect, so a new key regenerates
    # the training split stays the rubric seed's own (public: students may reproduce it)
    public = generate_embedded_voc(tmp_path / "public", seed=0, **SMALL)
    for x, y, z in zip(_split(a, "train"), _split(b, "train"), _split(public, "train")):
        assert np.array_equal(x, y) and np.array_equal(x, z)
    # and the val split is not the one anyone regenerates from the rubric's seed
    assert not any(np.array_equal(m, n) for m, n in zip(val_a[1], _split(public, "val")[1]))


def test_the_key_file_is_owner_only_and_named_nowhere(tmp_path: Path) -> None:
    root = embedded_voc_root(cache_dir=tmp_path, **SMALL)
    key_file = tmp_path / KEY_FILE
    info = key_file.lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and info.st_size == KEY_BYTES
    key = key_file.read_bytes()
    assert key.hex()[:12] not in root.name and secret_fingerprint(key) not in root.name
    assert installation_secret(tmp_path) == key  # made once: a second call reads it back
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_a_new_key_regenerates_the_dataset_and_a_new_prepared_job(tmp_path: Path) -> None:
    rubric = load_rubric(TEST_RUBRIC)
    text = rubric_yaml(rubric)
    first_root = embedded_voc_root(cache_dir=tmp_path, **SMALL)
    first_key = cache_key(rubric, text, "cpu", cache_dir=tmp_path)
    assert first_key == cache_key(rubric, text, "cpu", cache_dir=tmp_path)
    (tmp_path / KEY_FILE).unlink()  # the staff rotate the key
    assert cache_key(rubric, text, "cpu", cache_dir=tmp_path) != first_key
    second_root = embedded_voc_root(cache_dir=tmp_path, **SMALL)
    assert second_root != first_root
    assert not np.array_equal(_split(first_root, "val")[1], _split(second_root, "val")[1])
    assert cache_key(rubric, text, "cpu") is None  # no cache folder, no secret to name: never reused


def _race(cache: str) -> bytes:
    return installation_secret(Path(cache))


def test_graders_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        keys = pool.map(_race, [str(tmp_path)] * 8)
    assert len(set(keys)) == 1 and len(keys[0]) == KEY_BYTES
    assert (tmp_path / KEY_FILE).read_bytes() == keys[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


def test_the_loser_of_the_race_reads_the_winners_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    winner = os.urandom(KEY_BYTES)
    real_link = os.link

    def link_after_the_winner(src: str, dst: str) -> None:
        Path(dst).write_bytes(winner)  # the other grader published its key between our read and our link
        real_link(src, dst)

    monkeypatch.setattr(evalsecret.os, "link", link_after_the_winner)
    assert installation_secret(tmp_path) == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


def test_a_broken_key_file_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_bytes(b"short")
    with pytest.raises(EvalSecretError, match="Delete it"):
        installation_secret(tmp_path)
    (tmp_path / KEY_FILE).unlink()
    (tmp_path / "elsewhere").write_bytes(os.urandom(KEY_BYTES))
    (tmp_path / KEY_FILE).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(EvalSecretError, match="delete it"):
        installation_secret(tmp_path)


def test_a_loose_key_file_is_made_owner_only(tmp_path: Path) -> None:
    key = os.urandom(KEY_BYTES)
    (tmp_path / KEY_FILE).write_bytes(key)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    assert installation_secret(tmp_path) == key
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_rotate_key_draws_a_new_split_and_keeps_the_old_key_aside(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from grader.cli import main

    cache = tmp_path / "cache"
    before = embedded_voc_root(cache_dir=cache, **SMALL)
    old_key = (cache / KEY_FILE).read_bytes()
    assert main(["rotate-key", "--cache-dir", str(cache)]) == 0
    said = capsys.readouterr().out
    [retired] = [p for p in cache.iterdir() if p.name.startswith(evalsecret.RETIRED_PREFIX)]
    new_key = (cache / KEY_FILE).read_bytes()
    assert retired.read_bytes() == old_key != new_key and len(new_key) == KEY_BYTES
    for path in (retired, cache / KEY_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"kept as {retired}" in said and secret_fingerprint(new_key) in said and old_key.hex() not in said
    after = embedded_voc_root(cache_dir=cache, **SMALL)
    assert after != before and before.is_dir()  # a new folder; the old term's is left alone
    val_before, val_after = _split(before, "val"), _split(after, "val")
    assert not any(np.array_equal(m, n) for m, n in zip(val_before[1], val_after[1]))
    assert all(np.array_equal(x, y) for x, y in zip(_split(before, "train"), _split(after, "train")))
    # the retired key, put back under its name elsewhere, regenerates the old term's split exactly
    (tmp_path / "restored").mkdir()
    (tmp_path / "restored" / KEY_FILE).write_bytes(retired.read_bytes())
    restored = embedded_voc_root(cache_dir=tmp_path / "restored", **SMALL)
    assert restored.name == before.name and all(np.array_equal(x, y) for x, y in
                                                zip(_split(restored, "val"), val_before))
    # a second rotation keeps both earlier keys: nothing is ever overwritten
    assert main(["rotate-key", "--cache-dir", str(cache)]) == 0
    kept = sorted(p.read_bytes() for p in cache.iterdir() if p.name.startswith(evalsecret.RETIRED_PREFIX))
    assert kept == sorted([old_key, new_key]) and (cache / KEY_FILE).read_bytes() not in kept
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_rotate_key_in_an_empty_cache_makes_the_first_key(tmp_path: Path) -> None:
    done = evalsecret.rotate_secret(tmp_path / "new")
    assert done.retired is None and done.retired_fingerprint is None
    assert done.fingerprint == secret_fingerprint(installation_secret(tmp_path / "new"))


def test_rotate_key_refuses_a_broken_key_and_moves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from grader.cli import main

    (tmp_path / KEY_FILE).write_bytes(b"short")
    assert main(["rotate-key", "--cache-dir", str(tmp_path)]) == 2
    assert "Delete it" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]
    assert (tmp_path / KEY_FILE).read_bytes() == b"short"


def _hand_in_a_copy_of_the_generator(submission: Path) -> None:
    """What a student can always do, whatever the sandbox hides: copy the grader's public generator source
    (shapes.py and what it imports) beside segmentation.py, its ``grader.`` imports made local."""
    grader_src = Path(shapes.__file__).parent.parent
    modules = {"shapes": "data", "voc": "core", "evalsecret": "data"}  # module -> its package under grader/
    for name, package in modules.items():
        text = (grader_src / package / f"{name}.py").read_text()
        for other, where in modules.items():
            text = text.replace(f"from grader.{where}.{other} import", f"from copied_{other} import")
        assert "from grader" not in text and "import grader" not in text, f"{name}.py imports more of grader"
        (submission / f"copied_{name}.py").write_text(text)


def test_the_attack_finds_every_image_of_a_public_split_and_none_of_the_graders(tmp_path: Path) -> None:
    """The fixture's matching, done here by trusted code: it would find each evaluation image if the split
    came from the rubric's seed (so the graded test below can fail), and finds none of the grader's."""
    size, n_val = 32, 6
    bank = np.stack([shapes.render_example(np.random.default_rng([0, 1, i]), size)[0] for i in range(20)])
    public = generate_embedded_voc(tmp_path / "public", n_train=1, n_val=n_val, size=size, seed=0)
    graders = embedded_voc_root(cache_dir=tmp_path / "cache", n_train=1, n_val=n_val, size=size, seed=0)

    def gaps(root: Path) -> np.ndarray:
        images = _split(root, "val")[0].transpose(0, 2, 3, 1).astype(np.float64) / 255
        return np.abs(images[:, None] - bank[None] / 255).mean(axis=(2, 3, 4)).min(axis=1)

    assert (gaps(public) < 0.05).all() and (gaps(graders) > 0.05).all()  # 0.05: the fixture's threshold


@pytest.mark.slow
def test_a_train_that_regenerates_the_eval_labels_scores_the_floor(tmp_path: Path, test_rubric,
                                                                   cache_dir: Path) -> None:
    """The fixture rebuilds the val split with the grader's generator (a copy of its source, so this holds
    whether or not the sandbox shows the grader's own) and answers each evaluation image with its
    regenerated mask: mIoU 1.0 before the secret, the all-background floor after."""
    from fixture_submissions import materialize
    from grader.batch.batch import GradeOptions, grade_all
    from grader.sandbox.local import LocalSandbox

    sub = materialize("regenerates_eval_labels", tmp_path / "class")
    _hand_in_a_copy_of_the_generator(sub)
    [result] = grade_all([sub], rubric=test_rubric, sandbox=LocalSandbox(),
                         options=GradeOptions(out_dir=tmp_path / "out", cache_dir=cache_dir))
    check = {c.id: c for c in result.checks}["full_training"]
    assert "miou" in check.details, f"{check.status}: {check.message}"
    # at most the floor: its hook answers every image with background (no regenerated image matches the
    # secret split), and the grader now also removes hooks before it evaluates (red team B4), which leaves the
    # untrained net, below the floor
    assert check.details["miou"] <= check.details["floor"] + 1e-9, check.message
    assert check.score == 0 and check.status == "failed"
    assert {c.id: c.status for c in result.checks}["model_shapes"] == "passed"  # it was really judged


def test_a_ray_node_with_another_key_refuses_to_grade(tmp_path: Path, test_rubric) -> None:
    from grader.batch.grading import NodeGrader
    from grader.intake.discover import Submission
    from grader.sandbox.base import InfrastructureError
    from grader.sandbox.factory import SandboxSpec

    driver, node = tmp_path / "driver", tmp_path / "node"
    driver.mkdir(), node.mkdir()
    (driver / KEY_FILE).write_bytes(b"d" * 32), (node / KEY_FILE).write_bytes(b"n" * 32)
    for folder in (driver, node):
        (folder / KEY_FILE).chmod(0o600)
    grade_one = NodeGrader(rubric=test_rubric, sandbox=SandboxSpec(kind="local"), cache_dir=str(node),
                           eval_key=secret_fingerprint(installation_secret(driver)))
    sub = Submission(student="s", path=tmp_path, content_hash="0", source="s", notes=())
    with pytest.raises(InfrastructureError, match="evaluation key"):
        grade_one(sub, None)
