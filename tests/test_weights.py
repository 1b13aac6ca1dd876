"""The course's pretrained weights (rubric ``pretrained:``, ``grader weights``, grader.weights): verified on the way
in, a batch stops before any student when one is missing, the sandbox sees exactly the allowed files, read-only.

The checkpoint is one the test makes: a random ResNet-18 state_dict saved under torchvision's own file name
(``resnet18-f37072fd.pth``), declared in the test rubric with its real sha256 (the declared hash wins over the
prefix in the name). torch's hub checks a hash only when it downloads, so torchvision's real loading path runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grader.rubric import RubricError, load_rubric, parse_rubric
from grader.sandbox.base import SandboxRequest
from grader.weights import WeightsError, WeightsMissing, add, check_node, fingerprint, provide, resolve, status

REPO = Path(__file__).resolve().parent.parent
TV_FILE = "resnet18-f37072fd.pth"  # torchvision's name for ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(path, sha256) of a random ResNet-18 state_dict under torchvision's file name."""
    return generate_checkpoint(tmp_path_factory.mktemp("weights"))


def generate_checkpoint(folder: Path) -> tuple[Path, str]:
    import torch
    import torchvision

    torch.manual_seed(0)
    path = folder / TV_FILE
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def weights_rubric(tmp_path: Path, entries: str, base: Path = REPO / "tests" / "rubric_small.yaml") -> Path:
    path = tmp_path / "rubric.yaml"
    path.write_text(base.read_text() + f"pretrained: {entries}\n")
    return path


def course_entry(checkpoint: tuple[Path, str]) -> str:
    return f"[{{file: {TV_FILE}, sha256: {checkpoint[1]}}}]"


@pytest.fixture(autouse=True)
def no_torch_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host user's own torch cache is looked in too: never this machine's in a test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "users-torch-home"))


@pytest.mark.parametrize(("entries", "said"), [
    ("[resnet18]", "pretrained[0]: 'resnet18' is not a torchvision weights name"),
    ("[{file: a/b.pth, sha256: " + "a" * 64 + "}]", "pretrained[0].file: 'a/b.pth' must be a plain file name"),
    ("[{file: x.pth}]", "pretrained[0]: a course checkpoint needs both file and sha256"),
    ("[{file: x.pth, sha256: ABC}]", "pretrained[0].sha256: must be 64 lowercase hex digits"),
    ("[ResNet18_Weights.IMAGENET1K_V1, ResNet18_Weights.IMAGENET1K_V1]", "pretrained[1]: "),
    ("[{weights: R_Weights.A, file: x.pth}]", "pretrained[0]: give a torchvision weights name OR"),
    ("[{url: x}]", "pretrained[0].url: unknown key"),
])
def test_a_wrong_pretrained_entry_names_its_yaml_path(tmp_path: Path, entries: str, said: str) -> None:
    with pytest.raises(RubricError, match=None) as caught:
        load_rubric(weights_rubric(tmp_path, entries))
    assert said in str(caught.value)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.text(max_size=40), st.integers(), st.none(),
                 st.dictionaries(st.sampled_from(["file", "sha256", "weights", "x"]), st.text(max_size=70), max_size=3)))
def test_any_pretrained_entry_is_accepted_or_refused_with_a_rubric_error(entry: object) -> None:
    text = (REPO / "tests" / "rubric_small.yaml").read_text() + "pretrained: " + json.dumps([entry]) + "\n"
    try:
        rubric = parse_rubric(text)
    except RubricError as exc:
        assert str(exc).startswith("pretrained")
        return
    [spec] = rubric.pretrained
    assert (spec.weights is None) != (spec.file is None)
    assert spec.file is None or ("/" not in spec.file and not spec.file.startswith("."))


def test_a_torchvision_name_resolves_to_the_file_its_hub_looks_for(tmp_path: Path) -> None:
    rubric = load_rubric(weights_rubric(tmp_path, "[ResNet18_Weights.IMAGENET1K_V1]"))
    [weight] = resolve(rubric, tmp_path / "cache")
    assert (weight.file, weight.prefix) == (TV_FILE, "f37072fd")
    assert weight.url == f"https://download.pytorch.org/models/{TV_FILE}"
    listed = "[ResNet34_Weights.IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2, VGG16_BN_Weights.IMAGENET1K_V1, " \
             "MobileNet_V3_Large_Weights.IMAGENET1K_V1]"  # the README's set
    for weight in resolve(load_rubric(weights_rubric(tmp_path, listed)), tmp_path / "cache"):
        assert weight.prefix and weight.file.endswith(".pth") and weight.url.endswith(weight.file), weight
    unknown = load_rubric(weights_rubric(tmp_path, "[ResNet18_Weights.IMAGENET9K]"))
    with pytest.raises(RubricError, match=r"pretrained\[0\]: 'ResNet18_Weights.IMAGENET9K' is not a weight"):
        resolve(unknown, tmp_path / "cache")


def test_add_refuses_a_file_whose_hash_differs_saying_both(tmp_path: Path, checkpoint: tuple[Path, str]) -> None:
    path, digest = checkpoint
    cache = tmp_path / "cache"
    by_name = load_rubric(weights_rubric(tmp_path, "[ResNet18_Weights.IMAGENET1K_V1]"))
    with pytest.raises(WeightsError) as caught:  # a random net is not torchvision's file: prefix f37072fd
        add([path], rubric=by_name, cache_dir=cache)
    assert digest in str(caught.value) and "f37072fd" in str(caught.value)
    declared = load_rubric(weights_rubric(tmp_path, f"[{{file: {TV_FILE}, sha256: {'f' * 64}}}]"))
    with pytest.raises(WeightsError) as caught:
        add([path], rubric=declared, cache_dir=cache)
    assert digest in str(caught.value) and "f" * 64 in str(caught.value)
    assert not (cache / "weights" / TV_FILE).exists()
    done = _grader("weights", "add", str(path), "--rubric", str(weights_rubric(tmp_path, "[ResNet18_Weights."
                   "IMAGENET1K_V1]")), "--cache-dir", str(cache), env={"TORCH_HOME": str(tmp_path / "none")})
    assert done.returncode == 2 and digest in done.stderr and "refused" in done.stderr


def test_add_then_list_then_a_batch_torch_home_holding_exactly_the_allowed_files(
        tmp_path: Path, checkpoint: tuple[Path, str]) -> None:
    rubric_path = weights_rubric(tmp_path, course_entry(checkpoint))
    cache, env = tmp_path / "cache", {"TORCH_HOME": str(tmp_path / "none")}
    listed = _grader("weights", "list", "--rubric", str(rubric_path), "--cache-dir", str(cache), env=env)
    assert listed.returncode == 0 and f"{TV_FILE}: MISSING: grader weights add {TV_FILE}" in listed.stdout
    added = _grader("weights", "add", str(checkpoint[0]), "--rubric", str(rubric_path), "--cache-dir", str(cache),
                    env=env)
    assert added.returncode == 0, added.stderr
    listed = _grader("weights", "list", "--rubric", str(rubric_path), "--cache-dir", str(cache), env=env)
    assert f"{TV_FILE}: present ({cache.resolve() / 'weights' / TV_FILE})" in listed.stdout
    (cache / "weights" / "other.pth").write_bytes(b"not allowed")  # in the cache, never shown
    home = provide(load_rubric(rubric_path), cache_dir=cache, scratch=tmp_path)
    assert home is not None and not home.is_relative_to(cache)
    shown = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert shown == ["hub", "hub/checkpoints", f"hub/checkpoints/{TV_FILE}"]
    assert hashlib.sha256((home / "hub" / "checkpoints" / TV_FILE).read_bytes()).hexdigest() == checkpoint[1]
    assert oct((home / "hub" / "checkpoints").stat().st_mode & 0o777) == "0o555"


def test_a_weight_changed_in_the_cache_after_it_was_added_stops_the_batch(
        tmp_path: Path, checkpoint: tuple[Path, str]) -> None:
    rubric = load_rubric(weights_rubric(tmp_path, course_entry(checkpoint)))
    cache = tmp_path / "cache"
    add([checkpoint[0]], rubric=rubric, cache_dir=cache)
    stored = cache / "weights" / TV_FILE
    stored.chmod(0o600)
    with open(stored, "r+b") as f:
        f.seek(1000)
        f.write(b"\0\1\2\3")
    with pytest.raises(WeightsMissing, match=f"changed since it was added.*grader weights add {TV_FILE}"):
        provide(rubric, cache_dir=cache, scratch=tmp_path)


def test_fetch_without_network_fails_clearly(tmp_path: Path) -> None:
    rubric_path = weights_rubric(tmp_path, "[ResNet18_Weights.IMAGENET1K_V1]")
    done = _grader("weights", "fetch", "--rubric", str(rubric_path), "--cache-dir", str(tmp_path / "cache"),
                   env={"TORCH_HOME": str(tmp_path / "none"), "https_proxy": "http://127.0.0.1:9"})
    assert done.returncode == 3, done.stdout
    assert f"cannot download ResNet18_Weights.IMAGENET1K_V1 from https://download.pytorch.org/models/{TV_FILE}" \
        in done.stderr
    assert f"grader weights add {TV_FILE}" in done.stderr


def test_allowed_but_never_added_exits_3_before_any_student_and_names_the_command(
        tmp_path: Path, checkpoint: tuple[Path, str]) -> None:
    rubric_path = weights_rubric(tmp_path, course_entry(checkpoint))
    (tmp_path / "class" / "eve").mkdir(parents=True)
    (tmp_path / "class" / "eve" / "segmentation.py").write_text(
        (REPO / "examples" / "submissions" / "eve" / "segmentation.py").read_text())
    out = tmp_path / "out"
    done = _grader("grade", str(tmp_path / "class"), "--out", str(out), "--rubric", str(rubric_path), "-q",
                   "--cache-dir", str(tmp_path / "cache"), env={"TORCH_HOME": str(tmp_path / "none")})
    assert done.returncode == 3, done.stderr
    assert "no student was graded" in done.stderr and f"grader weights add {TV_FILE} --cache-dir" in done.stderr
    assert not list(out.rglob("result.json")) if out.exists() else True
    assert not (tmp_path / "cache" / "prepared").exists()  # stopped before the job was even prepared


def test_a_ray_node_without_the_drivers_weights_says_which(tmp_path: Path, checkpoint: tuple[Path, str]) -> None:
    rubric = load_rubric(weights_rubric(tmp_path, course_entry(checkpoint)))
    driver, node = tmp_path / "driver", tmp_path / "node"
    add([checkpoint[0]], rubric=rubric, cache_dir=driver)
    sent = fingerprint(rubric, cache_dir=driver)
    assert sent == ((TV_FILE, checkpoint[1]),)
    with pytest.raises(WeightsMissing, match=f"missing {TV_FILE}, different none"):
        check_node(rubric, cache_dir=node, driver=sent)
    add([checkpoint[0]], rubric=rubric, cache_dir=node)
    check_node(rubric, cache_dir=node, driver=sent)  # the same files: no error
    assert [p.where for p in status(rubric=rubric, cache_dir=node)] == ["cache"]


_PROBE = """\
import json, os, sys
home = os.environ["TORCH_HOME"]
ck = os.path.join(home, "hub", "checkpoints")
seen = sorted(os.path.relpath(os.path.join(d, f), home) for d, _, fs in os.walk(home) for f in fs)
tries = {}
for name, act in [("new file", lambda: open(os.path.join(ck, "mine.pth"), "wb")),
                  ("overwrite", lambda: open(os.path.join(ck, sys.argv[1]), "r+b")),
                  ("unlink", lambda: os.unlink(os.path.join(ck, sys.argv[1]))),
                  ("chmod", lambda: os.chmod(os.path.join(ck, sys.argv[1]), 0o666)),
                  ("mkdir", lambda: os.mkdir(os.path.join(home, "hub", "more")))]:
    try:
        act()
        tries[name] = "done"
    except OSError as exc:
        tries[name] = exc.strerror
import torchvision
net = torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
print(json.dumps({"seen": seen, "tries": tries, "cache": os.path.exists(sys.argv[2]),
                  "loaded": float(net.conv1.weight.sum())}))
"""


def test_in_the_local_sandbox_the_weights_load_offline_and_nothing_else_is_there_or_writable(
        tmp_path: Path, checkpoint: tuple[Path, str]) -> None:
    import torch

    from grader.sandbox.local import LocalSandbox

    rubric = load_rubric(weights_rubric(tmp_path, course_entry(checkpoint)))
    cache = tmp_path / "cache"
    add([checkpoint[0]], rubric=rubric, cache_dir=cache)
    (cache / "weights" / "secret.pth").write_bytes(b"staff only")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    home = provide(rubric, cache_dir=cache, scratch=scratch)
    folders = {n: scratch / n for n in ("job", "out", "submission")}
    for folder in folders.values():
        folder.mkdir()
    request = SandboxRequest(submission_dir=folders["submission"], job_dir=folders["job"], out_dir=folders["out"],
                             stage="import", timeout_s=120, memory_mb=4096, torch_home=home,
                             hidden_paths=(cache.resolve(),))
    run = LocalSandbox().run_argv([sys.executable, "-c", _PROBE, TV_FILE, str(cache / "weights")], request)
    assert run.exit_code == 0, run.stderr
    said = json.loads(run.stdout.strip().splitlines()[-1])
    assert said["seen"] == [f"hub/checkpoints/{TV_FILE}"]
    assert said["tries"] and all(v != "done" for v in said["tries"].values()), said["tries"]
    assert said["cache"] is False
    expected = torch.load(checkpoint[0], weights_only=True)["conv1.weight"].sum().item()
    assert said["loaded"] == pytest.approx(expected)  # torchvision loaded the generated file, offline


def _grader(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO, env={**os.environ, **(env or {})})


def test_the_kit_readme_names_the_allowed_weights_and_that_torchvision_downloads_them_at_home(tmp_path: Path) -> None:
    from grader.kit.handout import kit_rubric, student_readme

    guide = (REPO / "student_template" / "README.md").read_text()
    rubric = load_rubric(weights_rubric(tmp_path, "[ResNet18_Weights.IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2]"))
    readme = student_readme(rubric, kit_rubric(rubric), guide)
    assert "- `ResNet18_Weights.IMAGENET1K_V1`\n- `ResNet50_Weights.IMAGENET1K_V2`" in readme
    assert "At home torchvision downloads them itself" in readme
    assert kit_rubric(rubric).pretrained == rubric.pretrained  # the kit's self-check provides the same ones
    none = student_readme(load_rubric(REPO / "tests" / "rubric_small.yaml"),
                          kit_rubric(load_rubric(REPO / "tests" / "rubric_small.yaml")), guide)
    assert "this course provides no pretrained weights" in none


_EXCEPTIONS = st.one_of(
    st.builds(OSError, st.integers(-5, 200), st.text(max_size=20), st.one_of(st.none(), st.text(max_size=60))),
    st.builds(ValueError, st.text(max_size=30)), st.builds(ConnectionResetError), st.builds(RuntimeError))


@settings(max_examples=150, deadline=None)
@given(st.lists(_EXCEPTIONS, min_size=1, max_size=4), st.booleans())
def test_the_no_network_explanation_never_raises_and_names_only_network_failures(chain: list, cyclic: bool) -> None:
    """The runner explains every exception a student's code raises: whatever the chain, it answers."""
    import errno
    import urllib.error

    from grader.core.nonetwork import NO_NETWORK, explain

    for outer, inner in zip(chain, chain[1:]):
        outer.__cause__ = inner
    if cyclic:
        chain[-1].__context__ = chain[0]
    said = explain(chain[0])
    netlike = any(isinstance(e, ConnectionError) or (isinstance(e, OSError) and (
        e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.ENETDOWN, errno.ECONNRESET)
        or (e.errno in (errno.EROFS, errno.EACCES) and "hub/checkpoints" in str(e.filename)))) for e in chain)
    assert (said is not None) == netlike
    assert said is None or said.startswith(NO_NETWORK)
    assert explain(urllib.error.URLError("[Errno -3] Temporary failure in name resolution")).startswith(NO_NETWORK)
