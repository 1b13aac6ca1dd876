#!/usr/bin/env bash
# The grader's part of building the autograder image (setup.sh runs it once the grader is installed; `grader` and
# `python` on PATH are the grader's): the pretrained weights the rubric allows, then the embedded dataset, so that
# grading, which has no network, never waits for either.
#   bash gradescope/prepare.sh [SOURCE]     # SOURCE: the unpacked autograder.zip (default /autograder/source)
set -euo pipefail
source_dir="${1:-/autograder/source}"
rubric="$source_dir/rubric.yaml"
shopt -s nullglob
packed=("$source_dir"/weights/*)  # the course checkpoints make_zip.sh packed (nobody can download them)
if ((${#packed[@]})); then
  grader weights add "${packed[@]}" --rubric "$rubric"
fi
grader weights fetch --rubric "$rubric"  # torchvision's own, from its URLs (the image build has network)
python -c "import sys; from grader.rubric import load_rubric; from grader.job.folder import data_root
print('dataset:', data_root(load_rubric(sys.argv[1])))" "$rubric"
