"""The repository's own code passes its linter (pyproject.toml, [tool.ruff]): unused imports and names,
syntax errors, bugbear's likely bugs. The example submissions are excluded: they are written as students write."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=REPO,
                          capture_output=True, text=True)
    assert "No module named ruff" not in done.stderr, "install the dev extra: pip install -e '.[dev]'"
    assert done.returncode == 0, done.stdout + done.stderr
