#!/usr/bin/env bash
# Gradescope runs this once when it builds the autograder image (Ubuntu, as root).
set -euo pipefail
apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install -e /autograder/source
PATH="/autograder/venv/bin:$PATH" bash /autograder/source/gradescope/prepare.sh /autograder/source
