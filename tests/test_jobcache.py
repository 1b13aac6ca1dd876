"""Prepared jobs are reused between batches only where they cannot differ: same rubric, device, grader and
reference source, package versions, and the embedded dataset; an entry appears whole or not at all."""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest

from grader.job import cache as jobcache
from grader.job.cache import PREPARED, cache_key, reuse_or_build
from grader.job.prepare import prepare_job
from grader.rubric import Rubric, parse_rubric, rubric_yaml

UNIT_ONLY = """\
assignment: unit checks only (job cache)
threads: 1
budgets: {import: {timeout_s: 60}, unit: {timeout_s: 60}}
checks:
  - {id: transpose_conv, kind: transpose_conv, name: Transpose conv, points: 6, seed: 11, cases: 3}
  - {id: mean_iou, kind: mean_iou, name: Mean IoU, points: 2, seed: 13, cases: 2}
"""


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _key(rubric: Rubric, device: str = "cpu") -> str | None:
    return cache_key(rubric, rubric_yaml(rubric), device)


def test_the_key_changes_with_the_rubric_and_the_device_and_a_real_voc_root_is_never_cached(tmp_path: Path) -> None:
    rubric = parse_rubric(UNIT_ONLY)
    other = dataclasses.replace(rubric, checks=rubric.checks[:1])
    assert _key(rubric) == _key(parse_rubric(UNIT_ONLY)) is not None
    assert len({_key(rubric), _key(other), _key(rubric, "cuda")}) == 3
    voc = parse_rubric(UNIT_ONLY + f"dataset: {{kind: voc, voc_root: {str(tmp_path)!r}}}\n")
    assert _key(voc) is None


def test_a_second_batch_copies_the_prepared_job_instead_of_preparing_it_again(tmp_path: Path) -> None:
    rubric, cache = parse_rubric(UNIT_ONLY), tmp_path / "cache"
    first = prepare_job(rubric, job_dir=tmp_path / "a" / "job", host_dir=tmp_path / "a" / "host", cache_dir=cache)
    entry = cache / PREPARED / _key(rubric)
    assert _files(entry / "job") == _files(tmp_path / "a" / "job") and (entry / "host" / "host.json").is_file()
    assert (cache / PREPARED).stat().st_mode & 0o077 == 0 and (tmp_path / "a" / "host").stat().st_mode & 0o077 == 0
    (entry / "job" / "planted-in-the-entry").write_text("x")  # seen in the next job only if the entry is reused
    second = prepare_job(rubric, job_dir=tmp_path / "b" / "job", host_dir=tmp_path / "b" / "host", cache_dir=cache)
    assert (tmp_path / "b" / "job" / "planted-in-the-entry").is_file()
    assert second.plan.job_dir == (tmp_path / "b" / "job").resolve() and second.host_dir != first.host_dir
    assert first.expected.keys() == second.expected.keys()
    for case_id, exp in first.expected.items():
        assert np.array_equal(np.asarray(exp.value), np.asarray(second.expected[case_id].value), equal_nan=True)


def test_an_entry_left_half_built_is_built_again(tmp_path: Path) -> None:
    rubric, cache = parse_rubric(UNIT_ONLY), tmp_path / "cache"
    entry = cache / PREPARED / _key(rubric)
    (entry / "job").mkdir(parents=True)  # a crash before host.json: not an entry
    (entry / "job" / "torn").write_text("x")
    prepared = prepare_job(rubric, job_dir=tmp_path / "job", host_dir=tmp_path / "host", cache_dir=cache)
    assert not (tmp_path / "job" / "torn").exists() and (entry / "host" / "host.json").is_file()
    assert prepared.expected and (tmp_path / "job" / "job.json").is_file()


def test_two_graders_preparing_the_same_job_at_once_keep_one_entry(tmp_path: Path) -> None:
    rubric, cache, errors = parse_rubric(UNIT_ONLY), tmp_path / "cache", []

    def prepare(name: str) -> None:
        try:
            prepare_job(rubric, job_dir=tmp_path / name / "job", host_dir=tmp_path / name / "host", cache_dir=cache)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=prepare, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in (cache / PREPARED).iterdir()] == [_key(rubric)]  # no .building- folder left
    assert _files(tmp_path / "a" / "job") == _files(tmp_path / "b" / "job")


def test_a_job_from_the_cache_equals_one_prepared_without_a_cache(tmp_path: Path) -> None:
    rubric = parse_rubric(UNIT_ONLY)
    prepare_job(rubric, job_dir=tmp_path / "plain" / "job", host_dir=tmp_path / "plain" / "host")
    for name in ("fills", "reuses"):
        prepare_job(rubric, job_dir=tmp_path / name / "job", host_dir=tmp_path / name / "host",
                    cache_dir=tmp_path / "cache")
        assert _files(tmp_path / "plain" / "job") == _files(tmp_path / name / "job")
        assert _files(tmp_path / "plain" / "host") == _files(tmp_path / name / "host")


def _fake_build(tag: str):
    def build(job: Path, host: Path) -> None:
        for folder in (job, host):
            folder.mkdir(parents=True)
        (job / "built-by").write_text(tag)
        (host / "host.json").write_text("{}")  # last, as the preparation writes it
    return build


def test_a_stale_folder_in_the_way_is_replaced_even_when_another_grader_publishes_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two graders find the same half entry: both remove it, one renames first; the other's rename then
    fails on a whole entry, which it keeps instead of failing the batch."""
    cache, key = tmp_path / "cache", "k"
    entry = cache / PREPARED / key
    (entry / "job" / "half").mkdir(parents=True)  # stale: no host/host.json
    real_rmtree = jobcache.shutil.rmtree

    def rmtree_then_the_other_grader_publishes(path, ignore_errors=False):
        real_rmtree(path, ignore_errors=ignore_errors)
        if Path(path) == entry:
            _fake_build("other")(entry / "job", entry / "host")

    monkeypatch.setattr(jobcache.shutil, "rmtree", rmtree_then_the_other_grader_publishes)
    reuse_or_build(key, cache, _fake_build("us"), job_dir=tmp_path / "job", host_dir=tmp_path / "host")
    assert (tmp_path / "job" / "built-by").read_text() == "other" and (tmp_path / "host" / "host.json").is_file()
    assert [p.name for p in (cache / PREPARED).iterdir()] == [key]  # our temporary folder is gone


def test_an_entry_that_cannot_be_published_is_an_infrastructure_error_naming_the_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    (cache / PREPARED / "k" / "job" / "half").mkdir(parents=True)
    monkeypatch.setattr(jobcache.shutil, "rmtree", lambda path, ignore_errors=False: None)  # cannot remove it
    with pytest.raises(jobcache.InfrastructureError, match="delete .*prepared"):
        reuse_or_build("k", cache, _fake_build("us"), job_dir=tmp_path / "job", host_dir=tmp_path / "host")
