"""The grading worker: a process of its own (``python -m grader.serve.worker CONFIG``) that ``grader serve``
starts beside the web process. It takes queued submissions from the store and grades them with
``grader.api.grade`` (the same intake, executors, sandboxes and result folders as ``grader grade``), in
single-submission mode: an upload is never read as a class export.

- One worker per ``DIR`` (a lock file); at start, submissions left ``running`` by a worker that died are put
  back in the queue; ``done`` ones are never touched, so nothing finished is graded twice.
- A batch holds at most one submission per student (one running submission per student), the oldest first,
  and starts once the queue stopped growing for one poll (a class uploading at once shares one batch: one job
  preparation, one warm fork server).
- The stage a submission is in is read from the batch's scratch folder (the pipeline's ``<student>-*/<stage>``
  folders under this process's own temp folder) and written to the store for the student's page.
- Each finished submission keeps its own result.json and its report under ``DIR/.serve/history/<id>``
  (report.html before release; report-released.html, drawn when staff release); ``DIR/<student>`` holds the
  latest, as after ``grader grade``.
- An infrastructure fault is never a score: the submission is queued again, then ``failed`` after 3 tries.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from grader.serve.config import ServeConfig, history_dir, uploads_dir
from grader.serve.store import Store, Submission

__all__ = ["Worker", "main"]

_STAGE_POLL_S = 0.25


class _Progress:
    """``grader.api.Progress`` for one batch: begin -> stage, update -> the submission's history and store."""

    def __init__(self, worker: "Worker", batch: dict[str, Submission]) -> None:
        self.worker, self.batch = worker, batch

    def start(self, total: int) -> None:
        pass

    def begin(self, student: str) -> None:
        if student in self.batch:
            self.worker.store.set_stage(self.batch[student].id, "grading")

    def update(self, student: str, result) -> None:  # noqa: ANN001 - a SubmissionResult
        sub = self.batch.get(student)
        if sub is not None:
            self.worker.record(sub, result)


def _stamped(student_dir: Path, result, sub: Submission):  # noqa: ANN001, ANN202 - SubmissionResult
    """The result with the upload's time as ``provenance.submitted_at`` (the service is the LMS here), which the
    gradebook's late policy reads; result.json rewritten atomically."""
    from dataclasses import replace
    from datetime import datetime, timezone

    from grader.core.results import write_result

    stamp = datetime.fromtimestamp(sub.created, timezone.utc).isoformat(timespec="seconds")
    stamped = replace(result, provenance={**(result.provenance or {}), "submitted_at": stamp})
    write_result(student_dir, stamped)
    return stamped


class Worker:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.data = config.data_dir.resolve()
        self.store = Store(self.data)
        self.scratch = Path(tempfile.mkdtemp(prefix="seg-serve-worker-"))
        self.current: dict[str, Submission] = {}
        self.released = self.store.setting("released") == "1"
        self._stop = threading.Event()

    def lock(self) -> bool:
        """Whether this is the only worker of ``DIR`` (the lock lives as long as the process)."""
        path = self.data / ".serve" / "worker.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    # ------------------------------------------------------------------ one batch
    def record(self, sub: Submission, result) -> None:  # noqa: ANN001 - a SubmissionResult
        if result.status == "infrastructure_error":
            self.store.fail_or_requeue(sub.id, "the grading machinery failed (not your fault); it will be retried")
            return
        self.store.set_stage(sub.id, "rendering")
        from grader.report import render_student_report

        source, target = self.data / sub.student, history_dir(self.data) / str(sub.id)
        result = _stamped(source, result, sub)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "result.json", target / "result.json")
        if (source / "artifacts").is_dir():
            shutil.copytree(source / "artifacts", target / "artifacts", dirs_exist_ok=True)
        if self.released:  # else drawn once, when staff release (render_released)
            render_student_report(target, released=True)
            os.replace(target / "report.html", target / "report-released.html")
        render_student_report(target, released=False)
        visible = [c for c in result.checks if c.visibility == "visible"]
        self.store.finish(sub.id, score=result.score, max_score=result.max_score, result_status=result.status,
                          message=result.message or "",
                          visible=(sum(c.score for c in visible), sum(c.max_score for c in visible)))

    def grade(self, subs: list[Submission]) -> None:
        from grader import api

        for rerun in (False, True):  # a staff re-run grades afresh; a student's upload may reuse an equal result
            part = {s.student: s for s in subs if bool(s.rerun) == rerun}
            if not part:
                continue
            paths = [uploads_dir(self.data) / str(s.id) / f"{s.student}.{s.kind}" for s in part.values()]
            self.current = part
            try:  # single: an upload is never read as a class export
                api.grade(paths, rubric=self.config.rubric, out_dir=self.data, sandbox=self.config.sandbox,
                          image=self.config.image, executor=self.config.executor, jobs=self.config.jobs,
                          gpus=self.config.gpus, jobs_per_gpu=self.config.jobs_per_gpu, regrade=rerun,
                          cache_dir=self.config.cache_dir, ray_address=self.config.ray_address,
                          progress=_Progress(self, part), render=False, single=True)
            except KeyboardInterrupt:
                raise  # SIGTERM or Ctrl-C: what runs stays "running" and is requeued by the next worker
            except Exception as exc:  # noqa: BLE001 - an infrastructure fault: retried, never a score
                for sub in part.values():
                    self.store.fail_or_requeue(sub.id, f"the grading machinery failed: {exc}")
            finally:
                self.current = {}
            for sub in part.values():  # graded in no way the progress saw (a bug): never left running
                self.store.fail_or_requeue(sub.id, "the grader lost track of this submission; it will be retried")
        self.render_class()

    def render_released(self) -> None:
        """Staff released the reports: each graded submission's released report, drawn once."""
        from grader.report import render_student_report

        for folder in sorted(history_dir(self.data).glob("*/result.json")):
            target = folder.parent
            if not (target / "report-released.html").exists():
                keep = (target / "report.html").read_bytes() if (target / "report.html").exists() else None
                render_student_report(target, released=True)
                os.replace(target / "report.html", target / "report-released.html")
                if keep is not None:
                    (target / "report.html").write_bytes(keep)

    def render_class(self) -> None:
        """The class summary, the students' latest reports and grades.csv, as ``grader report DIR`` draws them
        (the staff's overrides, extensions and the rubric's late policy included), only what changed."""
        from grader import api

        try:
            api.report(self.data, released=self.released, rubric=self.config.rubric, only_changed=True)
        except Exception as exc:  # noqa: BLE001 - a bad staff file: the grading goes on, staff are told
            print(f"grader serve: the class pages were not redrawn: {exc}", file=sys.stderr)

    # ------------------------------------------------------------------ stages, from the scratch folder
    def _watch_stages(self) -> None:
        seen: dict[int, str] = {}
        while not self._stop.wait(_STAGE_POLL_S):
            for student, sub in list(self.current.items()):
                stage = self._stage_of(student)
                if stage and seen.get(sub.id) != stage:
                    seen[sub.id] = stage
                    self.store.set_stage(sub.id, stage)

    def _stage_of(self, student: str) -> str | None:
        newest: tuple[float, str] | None = None
        try:
            for run in self.scratch.glob(f"seg-grader-*/{student[:40]}-*"):
                if run.name.rpartition("-")[0] != student[:40]:
                    continue
                for stage in run.iterdir():
                    if stage.is_dir():
                        made = stage.stat().st_mtime
                        if newest is None or made > newest[0]:
                            newest = (made, stage.name)
        except OSError:
            return None
        return newest[1] if newest else None

    # ------------------------------------------------------------------ the loop
    def run(self, *, once: bool = False) -> None:
        tempfile.tempdir = str(self.scratch)  # the batches' scratch folders land here, where stages are read
        requeued = self.store.requeue_running()
        if requeued:
            print(f"grader serve: {requeued} submission(s) interrupted earlier are queued again", file=sys.stderr)
        if self.released:
            self.render_released()  # a worker stopped while drawing them
        watcher = threading.Thread(target=self._watch_stages, name="stages", daemon=True)
        watcher.start()
        limit = self.config.batch_max or 4 * max(1, self.config.jobs)
        waiting = -1  # how many were queued at the last look: a batch starts once uploads stop arriving
        try:
            while True:
                released = self.store.setting("released") == "1"
                if released != self.released:
                    self.released = released
                    if released:
                        self.render_released()
                    self.render_class()
                queued = len(self.store.submissions(status=("queued",)))
                if queued and queued < limit and queued != waiting and not once:
                    waiting = queued  # more may be on their way (a class uploading at once): one batch, one job
                    time.sleep(self.config.poll_s)
                    continue
                waiting = -1
                subs = self.store.claim(limit)
                if subs:
                    self.grade(subs)
                elif once:
                    return
                else:
                    time.sleep(self.config.poll_s)
        finally:
            self._stop.set()
            shutil.rmtree(self.scratch, ignore_errors=True)


def _die_with_parent() -> None:
    """Linux: SIGTERM when the ``grader serve`` process that started us dies (even by SIGKILL)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    config = ServeConfig.from_json(args[0])
    _die_with_parent()
    if len(args) > 1 and os.getppid() != int(args[1]):
        return 0  # the parent died before we could ask to die with it
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    worker = Worker(config)
    if not worker.lock():
        print(f"grader serve: another worker is grading {config.data}; not starting a second", file=sys.stderr)
        return 2
    try:
        worker.run()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
