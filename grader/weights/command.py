"""``grader weights add FILE... | fetch | list | pack DIR [--all] [--rubric R] [--cache-dir C]``: the course's
pretrained weights.

A thin layer over ``grader.weights.store`` (keyword-only functions): parses, calls, prints, maps outcomes to the
grader's exit codes (0 done; 2 a refused file or an invalid rubric; 3 a download that failed or a file to pack that is missing).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader.data.evalsecret import default_cache_dir
from grader.rubric import RubricError, load_rubric
from grader.weights.store import WeightsError, WeightsMissing, add, fetch, pack, status

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction, default_rubric: Path) -> None:
    weights = sub.add_parser("weights", help="staff: the pretrained weights students may load (rubric's pretrained:)")
    actions = weights.add_subparsers(dest="action", required=True)
    add_p = actions.add_parser("add", help="store files downloaded elsewhere (each verified by its sha256)")
    add_p.add_argument("files", nargs="+", type=Path, help="e.g. resnet18-f37072fd.pth")
    actions.add_parser("fetch", help="download the allowed torchvision weights (needs network)")
    actions.add_parser("list", help="what the rubric allows and what this machine holds")
    pack_p = actions.add_parser("pack", help="copy the course checkpoints (with --all every allowed file) into DIR, "
                                            "for another machine (gradescope/make_zip.sh)")
    pack_p.add_argument("folder", type=Path, metavar="DIR")
    pack_p.add_argument("--all", action="store_true", help="torchvision's files too (else fetched there)")
    for p in actions.choices.values():
        p.add_argument("--rubric", type=Path, default=default_rubric, help="rubric YAML (default: %(default)s)")
        p.add_argument("--cache-dir", type=Path, default=None, help="the grader's cache (default "
                                                                     "~/.cache/seg-autograder); weights go to CACHE/weights")


def run(args: argparse.Namespace) -> int:
    cache = (args.cache_dir or default_cache_dir()).resolve()
    try:
        rubric = load_rubric(args.rubric)
        if args.action == "add":
            for weight in add(args.files, rubric=rubric, cache_dir=cache):
                print(f"added {weight.shown} to {cache / 'weights'} (sha256 checked)")
            return 0
        if args.action == "fetch":
            fetched = fetch(rubric=rubric, cache_dir=cache)
            print(f"fetched {', '.join(w.shown for w in fetched)}" if fetched else "nothing to fetch: all present")
            return 0
        if args.action == "pack":
            packed = pack(args.folder, rubric=rubric, cache_dir=cache, every=args.all)
            print(f"packed {', '.join(w.shown for w in packed)} into {args.folder}" if packed else
                  f"nothing to pack into {args.folder}: the rubric allows no course checkpoint")
            return 0
        return _list(rubric, cache)
    except RubricError as exc:
        print(f"grader weights: invalid rubric {args.rubric}: {exc}", file=sys.stderr)
        return 2
    except WeightsMissing as exc:
        print(f"grader weights {args.action}: {exc}", file=sys.stderr)
        return 3
    except WeightsError as exc:
        print(f"grader weights {args.action}: {exc}", file=sys.stderr)
        return 3 if args.action == "fetch" else 2


def _list(rubric, cache: Path) -> int:  # noqa: ANN001 - a Rubric
    found = status(rubric=rubric, cache_dir=cache)
    if not found:
        print("the rubric allows no pretrained weights (add a `pretrained:` list to it)")
        return 0
    for item in found:
        where = {"cache": f"present ({item.path})", "torch cache": f"present in torch's own cache ({item.path})",
                 "missing": f"MISSING: grader weights add {item.weight.file} (or grader weights fetch)"}[item.where]
        print(f"{item.weight.shown}: {where}")
    return 0
