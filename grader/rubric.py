"""rubric.yaml -> frozen dataclasses, validated.

Every key has a type and (where sensible) a default, declared once, in the dataclasses below. An unknown
key, a wrong type or a missing field raises RubricError naming the YAML path (``checks[3].atol``), so an
instructor tuning the rubric learns exactly which line to fix.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from grader.checks import KINDS, stage_of
from grader.checks.base import UNIT_STAGES, CheckSpec, RubricError, StageBudget
from grader.gradebook.late import LatePolicy

__all__ = [
    "RubricError", "Rubric", "DatasetSpec", "SimilaritySpec", "StageBudget", "Budgets", "CheckSpec", "CHECK_KINDS",
    "PretrainedSpec", "PUBLIC_VAL_SPLIT", "load_rubric", "parse_rubric", "rubric_yaml",
]

CHECK_KINDS = tuple(KINDS)


@dataclass(frozen=True)
class Budgets:
    import_: StageBudget = StageBudget(timeout_s=60)
    unit: StageBudget = StageBudget()
    model: StageBudget = StageBudget()
    overfit: StageBudget = StageBudget(timeout_s=300)
    train: StageBudget = StageBudget(timeout_s=600)

    def of(self, stage: str) -> StageBudget:
        return getattr(self, "import_" if stage == "import" else stage)


PUBLIC_VAL_SPLIT = "public_val"  # the embedded set's public validation split (grader.data.shapes)


@dataclass(frozen=True)
class DatasetSpec:
    kind: Literal["embedded", "voc"] = "embedded"
    voc_root: str | None = None  # folder that contains VOCdevkit/VOC2012 (kind: voc)
    size: int = 64  # images are resized / cropped / padded to size x size for training and evaluation
    n_train: int = 240  # embedded only
    n_val: int = 60  # embedded only
    seed: int = 0  # embedded generator seed
    train_split: str = "train"
    eval_split: str = "val"
    max_train_images: int | None = None  # cap for quick rubrics
    max_eval_images: int | None = None
    # The report's 2x2 draws its unseen image (with its ground truth) from this PUBLIC validation split: None =
    # the embedded set's `public_val` (drawn from the seed alone, never the keyed evaluation split), or VOC 2012's
    # `val` (its labels ship with the devkit). Never the training split; with kind: embedded, only `public_val`.
    contrast_split: str | None = None

    @property
    def public_split(self) -> str:
        """The public validation split the contrast's unseen image comes from (``contrast_split`` resolved)."""
        if self.contrast_split is not None:
            return self.contrast_split
        return PUBLIC_VAL_SPLIT if self.kind == "embedded" else "val"


@dataclass(frozen=True)
class SimilaritySpec:
    """``similarity: {threshold: 0.6}``: pairs of submissions at least this alike (0-1, the share of a
    submission's own normalised code fingerprints found in the other) are listed on the staff index
    (``grader.similarity.compare``); never a score, never shown to a student."""

    threshold: float = 0.6


@dataclass(frozen=True)
class PretrainedSpec:
    """One entry of ``pretrained:``, the weights students may load (``grader.weights`` stores and shows them): a
    torchvision weights enum by name, as a student writes it (``ResNet18_Weights.IMAGENET1K_V1``; YAML: the bare
    string), or a course checkpoint ``{file: NAME, sha256: HEX}`` (also a file under torchvision's own name whose
    bytes the course vouches for: the declared sha256 wins over the prefix in the name)."""

    weights: str | None = None  # torchvision's enum name, e.g. ResNet18_Weights.IMAGENET1K_V1
    file: str | None = None  # the file name under $TORCH_HOME/hub/checkpoints
    sha256: str | None = None  # 64 hex digits: the file's declared hash

    @property
    def label(self) -> str:
        return self.weights or str(self.file)


_WEIGHTS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*_Weights\.[A-Za-z][A-Za-z0-9_]*$")
_WEIGHTS_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,159}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMON_KEYS = {f.name for f in dataclasses.fields(CheckSpec)}
_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True)
class Rubric:
    assignment: str
    checks: tuple[CheckSpec, ...]
    dataset: DatasetSpec = DatasetSpec()
    budgets: Budgets = Budgets()
    similarity: SimilaritySpec = SimilaritySpec()
    pretrained: tuple[PretrainedSpec, ...] = ()  # the pretrained weights students may load (grader weights)
    late: LatePolicy | None = None  # the late policy (grader.gradebook.late); applied on top, never regrades
    num_classes: int = 21
    threads: int = 2  # torch threads inside each sandbox (fixed: same submission, same grade)
    max_output_kb: int = 64  # stdout/stderr kept per stage
    source_hash: str = ""  # sha256 of the YAML's values (without `similarity`), set by the loader

    @property
    def max_score(self) -> float:
        return float(sum(c.points for c in self.checks))

    def check(self, check_id: str) -> CheckSpec:
        return next(c for c in self.checks if c.id == check_id)

    def stages(self) -> list[str]:
        """The sandbox stages this rubric needs, in execution order: import, then ``unit`` (every visible unit
        check at once) and ``unit.withheld`` (the withheld ones) when there are some, then one stage per other
        check, named by its id."""
        order = {stage: i for i, stage in enumerate(UNIT_STAGES)}
        return list(dict.fromkeys(["import"] + sorted((stage_of(c) for c in self.checks),
                                                      key=lambda s: order.get(s, len(order)))))

    def budget(self, stage: str) -> StageBudget:
        """The budget of a sandbox stage (``import``, ``unit``, ``unit.withheld`` or a check id)."""
        if stage in ("import", *UNIT_STAGES):
            return self.budgets.of("unit" if stage in UNIT_STAGES else stage)
        return self.budgets.of(KINDS[self.check(stage).kind].budget)


def load_rubric(path: Path) -> Rubric:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RubricError(f"cannot read rubric {path}: {exc.strerror}; pass --rubric PATH") from exc
    return parse_rubric(text)


def parse_rubric(text: str) -> Rubric:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RubricError(f"rubric is not valid YAML: {exc}") from exc
    rubric = _build(Rubric, data, "")
    _validate(rubric, data)
    return dataclasses.replace(rubric, source_hash=_grading_hash(data))


def _grading_hash(data: dict) -> str:
    """What a result depends on: the rubric's values, not its comments or layout, and not the staff-only
    ``similarity`` and ``late`` sections (tuning the threshold or the due date must not regrade a class)."""
    graded = {k: v for k, v in data.items() if k not in ("similarity", "late")}  # staff-only: never regrade
    return hashlib.sha256(json.dumps(graded, sort_keys=True, default=str).encode()).hexdigest()


def rubric_yaml(rubric: Rubric) -> str:
    """YAML that ``parse_rubric`` reads back into an equal Rubric (``source_hash`` aside). It hands a rubric
    to another process also when code changed it (``grader check`` drops the hidden checks), which the
    original YAML text would not. Only values that differ from the defaults are written."""
    return yaml.safe_dump(_yaml_data(rubric), sort_keys=False)


def _yaml_data(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name.rstrip("_"): _yaml_data(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name != "source_hash" and not _is_default(f, getattr(value, f.name))}
    if isinstance(value, (tuple, list)):
        return [_yaml_data(v) for v in value]
    return value


def _is_default(field: dataclasses.Field, value: Any) -> bool:
    if field.default is not dataclasses.MISSING:
        return value == field.default
    return field.default_factory is not dataclasses.MISSING and value == field.default_factory()


def _validate(rubric: Rubric, data: dict) -> None:
    ids = [c.id for c in rubric.checks]
    if not ids:
        raise RubricError("checks: the rubric has no checks; add at least one")
    for i, check in enumerate(rubric.checks):
        where = f"checks[{i}]"
        if check.id in ("import", "unit") or not _ID.match(check.id):
            raise RubricError(f"{where}.id: {check.id!r} must be letters, digits and _ (not 'import' or 'unit'): "
                              "it names the check's stage and output folder")
        if check.id in ids[:i]:
            raise RubricError(f"{where}.id: {check.id!r} is used twice; ids must be unique")
        if check.points < 0:
            raise RubricError(f"{where}.points: must be >= 0")
        for req in check.requires:
            if req not in ids[:i]:
                raise RubricError(f"{where}.requires: {req!r} is not the id of an earlier check")
        KINDS[check.kind].validate(check, where)
    if not 0 < rubric.similarity.threshold <= 1:
        raise RubricError("similarity.threshold: must be in (0, 1]: the share of a submission found in another")
    if rubric.dataset.kind == "voc" and not rubric.dataset.voc_root:
        raise RubricError("dataset.voc_root: required when dataset.kind is voc (the folder containing VOCdevkit)")
    _validate_contrast_split(rubric.dataset)
    _validate_pretrained(rubric.pretrained)


def _validate_contrast_split(ds: DatasetSpec) -> None:
    """The 2x2's unseen image shows its ground truth on every report: a split whose labels are public, unseen."""
    split = ds.public_split
    if split == ds.train_split:
        raise RubricError(f"dataset.contrast_split: {split!r} is the training split; the report's unseen image must "
                          "be one neither net trained on (e.g. VOC 2012's val)")
    if ds.kind == "embedded" and split != PUBLIC_VAL_SPLIT:
        raise RubricError(f"dataset.contrast_split: with kind: embedded it is {PUBLIC_VAL_SPLIT!r} (the public "
                          f"validation split, drawn from the seed); {split!r} would show the labels of the keyed "
                          "evaluation split on every report. Leave it out")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", split) or split.startswith("."):
        raise RubricError(f"dataset.contrast_split: {split!r} must name a file of ImageSets/Segmentation "
                          "(letters, digits, _ . -), e.g. val")


def _validate_pretrained(entries: tuple[PretrainedSpec, ...]) -> None:
    """Names and hashes are checked here; that a torchvision name exists, on the host by ``grader.weights``."""
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"pretrained[{i}]"
        if entry.weights is not None and (entry.file is not None or entry.sha256 is not None):
            raise RubricError(f"{where}: give a torchvision weights name OR {{file, sha256}}, not both")
        if entry.weights is not None and not _WEIGHTS_NAME.match(entry.weights):
            raise RubricError(f"{where}: {entry.weights!r} is not a torchvision weights name; write it as a student "
                              "does, e.g. ResNet18_Weights.IMAGENET1K_V1")
        if entry.weights is None and (entry.file is None or entry.sha256 is None):
            raise RubricError(f"{where}: a course checkpoint needs both file and sha256 (e.g. {{file: "
                              "resnet18-f37072fd.pth, sha256: <64 hex digits of sha256sum FILE>})")
        if entry.file is not None and (not _WEIGHTS_FILE.match(entry.file) or entry.file.startswith("..")):
            raise RubricError(f"{where}.file: {entry.file!r} must be a plain file name (letters, digits, _ . + -), "
                              "the name under $TORCH_HOME/hub/checkpoints")
        if entry.sha256 is not None and not _SHA256.match(entry.sha256):
            raise RubricError(f"{where}.sha256: must be 64 lowercase hex digits (sha256sum FILE)")
        if entry.label in seen:
            raise RubricError(f"{where}: {entry.label!r} is listed twice")
        seen.add(entry.label)


def _build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass ``cls`` from YAML data, checking keys and types; errors name ``path``."""
    if not isinstance(data, dict):
        raise RubricError(f"{path or 'rubric'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source_hash"}
    yaml_name = {name: name.rstrip("_") for name in fields}  # import_ is spelled "import" in YAML
    known = {yaml_name[n]: n for n in fields}
    for key in data:
        if key not in known:
            raise RubricError(f"{_join(path, key)}: unknown key; known keys: {', '.join(sorted(known))}")
    kwargs = {}
    for key, name in known.items():
        field = fields[name]
        if key not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise RubricError(f"{_join(path, key)}: missing (required)")
            continue
        kwargs[name] = _coerce(hints[name], data[key], _join(path, key))
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is CheckSpec:
        return _build_check(value, path)
    if hint is PretrainedSpec and isinstance(value, str):  # the bare torchvision name
        return PretrainedSpec(weights=value)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path)
    if origin is Literal:
        if value not in args:
            raise RubricError(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise RubricError(f"{path}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise RubricError(f"{path}: expected a list of {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # PyYAML reads ``1e-5`` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, str, bool) and type(value) is hint:
        return value
    if hint is Any:
        return value
    raise RubricError(f"{path}: expected {getattr(hint, '__name__', hint)}, got {type(value).__name__} {value!r}")


def _build_check(data: Any, path: str) -> CheckSpec:
    """A check's fields are its kind's: ``kind`` picks the dataclass, and a key of another kind is refused."""
    if not isinstance(data, dict):
        raise RubricError(f"{path}: expected a mapping, got {type(data).__name__}")
    kind = KINDS.get(data.get("kind")) if isinstance(data.get("kind"), str) else None
    if kind is None:
        raise RubricError(f"{path}.kind: {data.get('kind')!r} is not one of {', '.join(KINDS)}")
    own = sorted(f.name for f in dataclasses.fields(kind.spec) if f.name not in _COMMON_KEYS)
    for key in data:
        if key not in _COMMON_KEYS and key not in own:
            raise RubricError(f"{_join(path, key)}: not a setting of a {kind.name} check (allowed: {', '.join(own)})")
    return _build(kind.spec, data, path)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)
