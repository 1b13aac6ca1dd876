"""``grader export canvas|generic DIR ...`` and ``grader release DIR --out FOLDER``, and the staff-file options
``grader report`` shares. A thin layer over ``grader.api``: parses, calls, prints, maps outcomes to exit codes
(0 done; 2 a bad staff file or bad usage, the message naming the file and line).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader import api
from grader.gradebook.book import Layers
from grader.gradebook.csvfile import GradebookError

__all__ = ["add_parsers", "add_layer_options", "layers_of", "run"]


def add_layer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overrides", type=Path, default=None,
                        help="staff overrides (student,check,points,adjust,comment,by); default DIR/overrides.csv")
    parser.add_argument("--extensions", type=Path, default=None,
                        help="per-student due dates (student,due); default DIR/extensions.csv")
    parser.add_argument("--times", type=Path, default=None,
                        help="submission times (student,submitted_at), e.g. from Canvas; default DIR/submission_times.csv")


def layers_of(args: argparse.Namespace) -> Layers:
    return Layers(overrides=args.overrides, extensions=args.extensions, times=args.times)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="staff: final grades for an LMS gradebook (Canvas, or keyed by e-mail/SID)")
    kinds = export.add_subparsers(dest="lms", required=True)
    canvas = kinds.add_parser("canvas", help="a CSV that Canvas's gradebook import accepts")
    canvas.add_argument("--assignment", required=True, help='the column as Canvas names it: "Assignment 5 (12345)"')
    canvas.add_argument("--no-points-possible", action="store_true", help="leave out the Points Possible row")
    generic = kinds.add_parser("generic", help="Name,Email,SID,Score,Max Points (Gradescope's roster and others)")
    generic.add_argument("--key", choices=("email", "sid"), default="email", help="the id rows are matched by")
    for p in (canvas, generic):
        p.add_argument("dir", type=Path, help="the grading output folder")
        p.add_argument("--roster", type=Path, default=None,
                       help="the LMS's roster (Canvas: its gradebook export): names, ids, and the students who "
                            "submitted nothing (blank)")
        p.add_argument("--missing", choices=("blank", "zero"), default="blank",
                       help="the cell of a roster student with no submission (default blank)")
        p.add_argument("--out", type=Path, default=None, help="the CSV (default DIR/canvas.csv or DIR/grades_KEY.csv)")
        add_layer_options(p)
    release = sub.add_parser("release", help="staff: each student's released report as one HTML file, named by "
                                             "the id the LMS knows, with manifest.csv")
    release.add_argument("dir", type=Path)
    release.add_argument("--out", type=Path, required=True, help="the folder to write the pages to")
    add_layer_options(release)


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "release":
            done = api.release(args.dir, out=args.out, layers=layers_of(args))
            for student, why in done.failed:
                print(f"grader release: {student}: page not drawn: {why}", file=sys.stderr)
            print(f"Released {done.pages} page(s) to {done.folder}; manifest: {done.manifest}")
            return 3 if done.failed else 0
        if args.lms == "canvas":
            done = api.export_canvas(args.dir, assignment=args.assignment, out=args.out, roster=args.roster,
                                     points_possible=not args.no_points_possible, missing=args.missing,
                                     layers=layers_of(args))
        else:
            done = api.export_generic(args.dir, key=args.key, out=args.out, roster=args.roster, missing=args.missing,
                                      layers=layers_of(args))
    except GradebookError as exc:
        print(f"grader {args.command}: {exc}", file=sys.stderr)
        return 2
    for student, why in done.unmatched:
        print(f"grader export: NOT exported: {student}: {why}", file=sys.stderr)
    for student in done.no_grade:
        print(f"grader export: {student}: left blank, no grade yet (an infrastructure error): grade again",
              file=sys.stderr)
    if done.unmatched_path:
        print(f"grader export: {len(done.unmatched)} unmatched student(s) listed in {done.unmatched_path}",
              file=sys.stderr)
    print(f"Wrote {done.path}: {done.rows} row(s), {done.graded} with a score.")
    return 0
