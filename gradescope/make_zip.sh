#!/usr/bin/env bash
# Build the zip to upload as a Gradescope "Autograder" (setup.sh and run_autograder at the zip's root,
# the project under source/... as Gradescope unpacks it into /autograder/source).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/autograder.zip}"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp "$repo/gradescope/setup.sh" "$repo/gradescope/run_autograder" "$stage/"
chmod +x "$stage/setup.sh" "$stage/run_autograder"
git -C "$repo" archive --format=tar HEAD pyproject.toml README.md rubric.yaml grader reference | tar -x -C "$stage"
(cd "$stage" && zip -qr "$out" .)
echo "wrote $out (upload it as the autograder; Gradescope unpacks it to /autograder/source)"
