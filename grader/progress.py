"""A progress bar for batches (tqdm on stderr): done, running, below full marks, not graded, and an ETA.
Silent with -q."""
from __future__ import annotations

import threading
from types import TracebackType

from grader.core.results import SubmissionResult

__all__ = ["Progress"]


class Progress:
    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled, self.bar = enabled, None
        self.running = self.below_max = self.not_graded = 0
        self._lock = threading.Lock()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.close()

    def start(self, total: int) -> None:
        if self.enabled and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="grading", unit="sub", dynamic_ncols=True)

    def begin(self, student: str) -> None:
        with self._lock:
            self.running += 1
            self._show()

    def update(self, student: str, result: SubmissionResult) -> None:
        with self._lock:
            self.running = max(0, self.running - 1)
            self.below_max += result.score < result.max_score
            self.not_graded += result.status != "graded"
            if self.bar is not None:
                self.bar.update(1)
            self._show(f"last={student} {result.score:g}/{result.max_score:g}")

    def _show(self, last: str = "") -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"running={self.running} below-max={self.below_max} "
                                     f"not-graded={self.not_graded} {last}".rstrip())
