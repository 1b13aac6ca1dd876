#!/usr/bin/env bash
# Build the zip to upload as a Gradescope "Autograder" (setup.sh and run_autograder at the zip's root,
# the project under source/... as Gradescope unpacks it into /autograder/source).
#   bash gradescope/make_zip.sh [OUT.zip]
# RUBRIC=FILE ships that rubric instead of the committed rubric.yaml; the course checkpoints its `pretrained:`
# allows are packed from this machine's cache (CACHE_DIR, default ~/.cache/seg-autograder: `grader weights add`
# them first); torchvision's own weights are downloaded when Gradescope builds the image (gradescope/prepare.sh).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${1:-$repo/autograder.zip}")"
grader="${GRADER:-$repo/.venv/bin/grader}"
[ -x "$grader" ] || grader="$(command -v grader)" || { echo "make_zip.sh: no grader to pack the weights with: install it (pip install -e .) or set GRADER=" >&2; exit 2; }
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp "$repo/gradescope/setup.sh" "$repo/gradescope/run_autograder" "$stage/"
chmod +x "$stage/setup.sh" "$stage/run_autograder"
git -C "$repo" archive --format=tar HEAD pyproject.toml README.md rubric.yaml grader reference gradescope | tar -x -C "$stage"
if [ -n "${RUBRIC:-}" ]; then cp "$RUBRIC" "$stage/rubric.yaml"; fi
"$grader" weights pack "$stage/weights" --rubric "$stage/rubric.yaml" ${CACHE_DIR:+--cache-dir "$CACHE_DIR"}
rm -f "$out"
(cd "$stage" && python3 -m zipfile -c "$out" *)  # zipfile keeps the mode bits (run_autograder stays executable)
echo "wrote $out (upload it as the autograder; Gradescope unpacks it to /autograder/source)"
