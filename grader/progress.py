"""A progress bar for batches (tqdm on stderr): done / failed counts and an ETA; silent with -q."""
from __future__ import annotations

from types import TracebackType

from grader.results import SubmissionResult

__all__ = ["Progress"]


class Progress:
    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled, self.bar, self.failed, self.problems = enabled, None, 0, 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.close()

    def start(self, total_paths: int) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(desc="grading", unit="sub", dynamic_ncols=True)

    def update(self, student: str, result: SubmissionResult) -> None:
        self.failed += result.score < result.max_score
        self.problems += result.status != "graded"
        if self.bar is not None:
            self.bar.set_postfix_str(f"last={student} {result.score:g}/{result.max_score:g} "
                                     f"below-max={self.failed} ungradable/infra={self.problems}")
            self.bar.update(1)
