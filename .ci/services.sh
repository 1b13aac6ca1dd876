#!/usr/bin/env bash
# Start what the test suite needs and a bare machine lacks: a Docker Engine (docker tests) and Debian's
# headless Chromium (browser tests). Both scripts are idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/docker-setup.sh"
bash "$here/browser-setup.sh"
