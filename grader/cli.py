"""The ``grader`` command: parses arguments, calls ``grader.api``, prints, and maps outcomes to exit codes.

    grader grade PATH... --out DIR [--rubric rubric.yaml] [--sandbox local|docker] [-j N] [--gpus 0,1
                 [--jobs-per-gpu K]]
                 [--executor pool|ray [--address HOST:PORT]]
    grader check [PATH]          # a student's self-check: public checks only, readable output
    grader selftest              # reference/ must get full marks, student_template/ zero
    grader calibrate [--seeds K] [--designs ada,ben]   # staff: mIoU over seeds on this device, a suggested bar
    grader handout --out KIT     # staff: the student kit (public checks, no solution; `pip install KIT`)
    grader rotate-key [--cache-dir D]   # staff, once per term: a new evaluation split (the old key kept aside)
    grader report DIR            # re-render the HTML and exports from DIR/*/result.json
    grader similarity DIR [--from PATH...]   # staff: similar pairs of DIR's graded submissions
    grader export canvas DIR --assignment "Title (id)" [--roster gradebook.csv]   # staff: final grades for Canvas
    grader release DIR --out FOLDER    # staff: each student's released report, one HTML file per LMS id
    grader weights add FILE... | fetch | list   # staff: the pretrained weights students may load
    grader serve --data DIR [--host H --port P]   # the submission service; `grader serve tokens` the links

Exit codes: 0 whatever the students did; 1 selftest failed; 2 bad usage or an invalid rubric; 3 an
infrastructure fault (nothing was scored as a zero); 130 interrupted (Ctrl-C or SIGTERM).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader import api
from grader.calibrate import CalibrationError, format_calibration
from grader.kit.handout import KitError
from grader.progress import Progress
from grader.core.results import SubmissionResult
from grader.rubric import RubricError
from grader.sandbox.base import InfrastructureError
from grader.terminal import print_result
from grader.gradebook import command as gradebook_command
from grader.gradebook.csvfile import GradebookError
from grader.serve import command as serve_command
from grader.weights import command as weights_command

__all__ = ["main", "build_parser"]

_EXECUTOR_OF_ENGINE = {"local": "pool", "ray": "ray"}  # the deprecated --engine's words (one release more)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grader", description="Grade the semantic-segmentation assignment.")
    sub = parser.add_subparsers(dest="command", required=True)
    grade = sub.add_parser("grade", help="grade submissions (folders, .py, .zip, .ipynb, or class folders)")
    grade.add_argument("paths", nargs="*", type=Path, help="submissions or folders of submissions")
    grade.add_argument("--out", type=Path, help="output folder (result.json per student, reports)")
    grade.add_argument("--regrade", action="store_true", help="grade again even if a result is up to date")
    gradebook_command.add_layer_options(grade)  # the staff's files the pages and grades.csv apply, as `report`
    grade.add_argument("--gradescope", action="store_true",
                       help="run inside Gradescope's container: grade /autograder/submission, write "
                            "/autograder/results/results.json")
    grade.add_argument("--executor", choices=("pool", "ray"), default="pool",
                       help="pool: a worker pool on this machine (default); ray: one Ray task per submission "
                            "on a Ray cluster (pip install -e '.[ray]')")
    grade.add_argument("--engine", choices=tuple(_EXECUTOR_OF_ENGINE), default=None,
                       help="deprecated: --executor (local is pool); removed in the next release")
    grade.add_argument("--address", default=None,
                       help="--executor ray: the cluster's address, e.g. 10.0.0.1:6379 (default: $RAY_ADDRESS, "
                            "else a Ray started on this machine)")
    grade.add_argument("--gradescope-root", type=Path, default=None, help=argparse.SUPPRESS)  # tests
    check = sub.add_parser("check", help="self-check a submission against the public checks")
    check.add_argument("path", nargs="?", type=Path, default=Path("."))
    check.add_argument("--out", type=Path, help="keep the result and report here (default: a temp folder)")
    selftest = sub.add_parser("selftest", help="grade reference/ (full marks) and student_template/ (zero)")
    selftest.add_argument("--out", type=Path)
    calibrate = sub.add_parser("calibrate", help="staff: train the reference (and example designs) over seeds "
                                                 "on this device; print the mIoU, the floor and a suggested bar")
    calibrate.add_argument("--seeds", type=_positive, default=3, metavar="K", help="seeds per design (default 3)")
    calibrate.add_argument("--designs", default=None, help="example designs to train beside the reference, e.g. "
                           "ada,ben (default: every one in examples/submissions; 'reference': none)")
    calibrate.add_argument("--margin", type=float, default=0.05,
                           help="the suggested bar's distance below the lowest honest run (default 0.05)")
    calibrate.add_argument("--out", type=Path, help="keep the graded runs here (default: a temp folder)")
    for p in (grade, check, selftest, calibrate):
        p.add_argument("--rubric", type=Path, default=api.DEFAULT_RUBRIC, help="rubric YAML (default: %(default)s)")
        p.add_argument("--sandbox", choices=("local", "docker"), default="local",
                       help="local: confined forks of a warm fork server (default); docker: a hardened container per submission")
        p.add_argument("--image", default=None, help="docker image (default: the grading image)")
        p.add_argument("-j", "--jobs", type=int, default=1, help="submissions graded at once (CPU)")
        p.add_argument("--gpus", default="", help="GPU indices, e.g. 0,1: one job per GPU (see --jobs-per-gpu)")
        p.add_argument("--jobs-per-gpu", type=_positive, default=1, metavar="K",
                       help="K submissions share each GPU, each capped to 1/K of its memory (default 1)")
        p.add_argument("--cache-dir", type=Path, default=None, help="dataset cache (default ~/.cache/seg-autograder)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    handout = sub.add_parser("handout", help="staff: write the student kit (template, README, installable "
                                             "self-check with the public checks; no solution)")
    handout.add_argument("--out", type=Path, required=True, help="the kit's folder (new or empty)")
    handout.add_argument("--rubric", type=Path, default=api.DEFAULT_RUBRIC, help="rubric YAML (default: %(default)s)")
    report = sub.add_parser("report", help="re-render reports and exports from result.json files")
    report.add_argument("dir", type=Path)
    report.add_argument("--released", action="store_true", help="show after-due-date checks to students")
    report.add_argument("--rubric", type=Path, default=None,
                        help="apply this rubric's late: policy (and record it in DIR); default: the one recorded")
    gradebook_command.add_layer_options(report)
    similar = sub.add_parser("similarity", help="staff: compare DIR's graded submissions pairwise (normalised code fingerprints)")
    similar.add_argument("dir", type=Path)
    similar.add_argument("--from", dest="sources", nargs="+", type=Path, default=[],
                         help="the submissions DIR was graded from: code for students whose copy is missing")
    similar.add_argument("--rubric", type=Path, default=api.DEFAULT_RUBRIC, help="its similarity.threshold")
    similar.add_argument("--force", action="store_true", help="compare again even if nothing changed")
    rotate = sub.add_parser("rotate-key", help="staff, once per term: a new evaluation key, hence a new embedded "
                                               "evaluation split (the old key is kept aside, not deleted)")
    rotate.add_argument("--cache-dir", type=Path, default=None, help="dataset cache (default ~/.cache/seg-autograder)")
    gradebook_command.add_parsers(sub)  # grader export canvas|generic, grader release
    weights_command.add_parser(sub, api.DEFAULT_RUBRIC)  # grader weights add | fetch | list
    serve_command.add_parser(sub, default_rubric=api.DEFAULT_RUBRIC)  # grader serve [tokens]
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _gpus(text: str) -> tuple[str, ...]:
    return tuple(g.strip() for g in text.split(",") if g.strip())


def _engine(args: argparse.Namespace) -> dict:
    """The arguments every grading command shares, as the API's keywords."""
    return {"rubric": args.rubric, "sandbox": args.sandbox, "image": args.image, "gpus": _gpus(args.gpus),
            "jobs_per_gpu": args.jobs_per_gpu, "cache_dir": args.cache_dir}


def cmd_grade(args: argparse.Namespace) -> int:
    if args.gradescope:
        return api.gradescope(rubric=args.rubric, sandbox=args.sandbox, image=args.image, cache_dir=args.cache_dir,
                              root=args.gradescope_root)
    if not args.paths or not args.out:
        print("grader grade: give the submissions and --out DIR, e.g. `grader grade examples/submissions "
              "--out results`", file=sys.stderr)
        return 2
    absent = [f"--{name} {path}" for name, path in (("overrides", args.overrides), ("extensions", args.extensions),
                                                     ("times", args.times)) if path is not None and not path.is_file()]
    if absent:  # said before an hour of grading, not after it
        print(f"grader grade: no such file: {', '.join(absent)}", file=sys.stderr)
        return 2
    with Progress(enabled=not args.quiet) as progress:
        results = api.grade(args.paths, out_dir=args.out, executor=_executor(args), jobs=args.jobs,
                            regrade=args.regrade, ray_address=args.address, progress=progress,
                            layers=gradebook_command.layers_of(args), **_engine(args))
    return _report_batch(results, args.out)


def _executor(args: argparse.Namespace) -> str:
    if args.engine is None:
        return args.executor
    executor = _EXECUTOR_OF_ENGINE[args.engine]
    print(f"grader grade: --engine is deprecated and goes in the next release (\"engine\" names the sandbox); "
          f"write --executor {executor}", file=sys.stderr)
    return executor


def _report_batch(results: list[SubmissionResult], out: Path) -> int:
    infra = [r.student for r in results if r.status == "infrastructure_error"]
    print(f"Graded {len(results)} submission(s). Results: {out}/<student>/result.json; "
          f"reports: {out}/index.html and {out}/<student>/report.html; gradebook: {out}/grades.csv")
    if infra:
        print(f"NOT graded because of an infrastructure fault (rerun the same command): {', '.join(infra)}",
              file=sys.stderr)
        return 3
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    if args.jobs != 1:  # refused, never ignored: one submission has nothing to share out
        print("grader check: -j grades several submissions at once, and check grades one; drop -j "
              "(--jobs-per-gpu sets a GPU's share)", file=sys.stderr)
        return 2
    with Progress(enabled=not args.quiet) as progress:
        result, page = api.check(args.path, out_dir=args.out, progress=progress, **_engine(args))
    print_result(result)
    isolation = str(result.provenance.get("sandbox", {}).get("isolation", ""))
    if "NOT isolated" in isolation:  # only `check` may run so (confine.py): the student must know
        print(f"\nNOTE: your code ran WITHOUT the sandbox here: {isolation.partition('NOT isolated: ')[2].partition(';')[0]}"
              " (staff grading always confines it).")
    print(f"\nFull report: {page}")
    return 0 if result.status != "infrastructure_error" else 3


def cmd_selftest(args: argparse.Namespace) -> int:
    with Progress(enabled=not args.quiet) as progress:
        outcome = api.selftest(out_dir=args.out, jobs=args.jobs, progress=progress, **_engine(args))
    for problem in outcome.problems:
        print(f"SELFTEST FAILED: {problem}", file=sys.stderr)
    if outcome.passed:
        ref, tpl = outcome.reference, outcome.template
        print(f"selftest passed: reference {ref.score}/{ref.max_score}, template {tpl.score}/{tpl.max_score} "
              f"(all {len(tpl.checks)} checks failed with a message). Results in {outcome.out_dir}")
    return 0 if outcome.passed else 3 if outcome.infrastructure_fault else 1


def cmd_calibrate(args: argparse.Namespace) -> int:
    designs = None if args.designs is None else tuple(d.strip() for d in args.designs.split(",") if d.strip())
    try:
        with Progress(enabled=not args.quiet) as progress:
            outcome = api.calibrate(seeds=args.seeds, designs=designs, margin=args.margin, out_dir=args.out,
                                    jobs=args.jobs, progress=progress, **_engine(args))
    except CalibrationError as exc:
        print(f"grader calibrate: {exc}", file=sys.stderr)
        return 2
    print(format_calibration(outcome))
    infra = sorted({r.design for r in outcome.runs if r.status == "infrastructure_error"})
    if infra:
        print(f"NOT measured because of an infrastructure fault (rerun): {', '.join(infra)}", file=sys.stderr)
        return 3
    return 0


def cmd_handout(args: argparse.Namespace) -> int:
    try:
        kit = api.handout(args.out, rubric=args.rubric)
    except KitError as exc:
        print(f"grader handout: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote the student kit to {kit} (give students the folder: `pip install {kit}`, then "
          f"`grader check .` in the folder holding their segmentation.py; see {kit}/README.md)")
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    outcome = api.similarity(args.dir, rubric=args.rubric, sources=args.sources, force=args.force)
    if outcome.error:
        print(f"grader similarity: the comparison failed: {outcome.error}", file=sys.stderr)
        return 3
    done = "compared" if outcome.computed else "up to date (nothing changed)"
    print(f"{outcome.students} submission(s) {done}: {outcome.flagged} pair(s) at or above the threshold in "
          f"{args.dir}/index.html, {outcome.pairs} above the floor in {args.dir}/similarity.csv.")
    if outcome.missing:
        print(f"Not compared, no copy of their code (give --from SUBMISSIONS): {', '.join(outcome.missing)}",
              file=sys.stderr)
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    try:
        done = api.rotate_key(cache_dir=args.cache_dir)
    except OSError as exc:  # EvalSecretError (a broken key file: nothing was moved) or the file system's refusal
        print(f"grader rotate-key: {exc}", file=sys.stderr)
        return 2
    kept = (f"the old key ({done.retired_fingerprint}) is kept as {done.retired}: rename it back to "
            f"{done.key_file.name} to grade on the old split again" if done.retired else "there was no key before")
    print(f"New evaluation key {done.fingerprint} in {done.key_file}; {kept}. The next batch draws a new "
          "evaluation split; copy the new key to every Ray node.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "rotate-key":
        return cmd_rotate_key(args)
    if args.command in ("export", "release"):
        return gradebook_command.run(args)
    if args.command == "report":
        try:
            api.report(args.dir, released=args.released, rubric=args.rubric, layers=gradebook_command.layers_of(args))
        except (GradebookError, RubricError) as exc:
            print(f"grader report: {exc}", file=sys.stderr)
            return 2
        print(f"Rendered {args.dir}/index.html and the per-student reports.")
        return 0
    try:
        return {"grade": cmd_grade, "check": cmd_check, "selftest": cmd_selftest, "calibrate": cmd_calibrate,
                "handout": cmd_handout, "similarity": cmd_similarity, "weights": weights_command.run,
                "serve": serve_command.run}[args.command](args)
    except RubricError as exc:
        print(f"grader: invalid rubric {args.rubric}: {exc}", file=sys.stderr)
        return 2
    except GradebookError as exc:  # a staff file in the output folder: the results are written and kept
        print(f"grader: {exc}; fix it, then run `grader report DIR`", file=sys.stderr)
        return 2
    except InfrastructureError as exc:
        print(f"grader: infrastructure fault, nothing was scored: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM during a batch (grader.batch.interrupts)
        print("grader: interrupted; finished results are kept, rerun to resume.", file=sys.stderr)
        return 130
