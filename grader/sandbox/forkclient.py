"""The grader's end of a fork server (``grader.sandbox.forkserver``), shared by both engines.

The local engine talks to a server it started as its own child (a socketpair); the Docker engine to the
server that is PID 1 of one submission's container (a unix socket in a folder mounted into it). Either way a
stage is: two pipes for its stdout/stderr handed over with the request, a wall clock kept HERE (never by
the sandbox), a kill when it runs out, and how it ended. What the sandbox says is data; a server that stops
answering, a stage that could not be confined, or one that never reached its confinement, is an
InfrastructureError.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import IO, Callable

from grader.sandbox.base import InfrastructureError
from grader.sandbox.confine import FAILED, MARKER

__all__ = ["ForkServerClient", "StageOutcome", "OutputTail", "run_forked", "KILL_WAIT_S"]

KILL_WAIT_S = 15.0  # a killed stage's exit must be reported by then, or the server is broken


class OutputTail:
    """Keeps the head and the tail of a stream, at most ``limit`` bytes, counting what it dropped."""

    def __init__(self, limit: int) -> None:
        self.limit, self.head, self.tail, self.dropped = limit, bytearray(), bytearray(), 0

    def feed(self, chunk: bytes) -> None:
        room = self.limit // 2 - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        excess = len(self.tail) - self.limit // 2
        if excess > 0:
            del self.tail[:excess]
            self.dropped += excess

    def text(self) -> str:
        middle = f"\n... [{self.dropped} bytes of output dropped] ...\n" if self.dropped else ""
        return (bytes(self.head).decode(errors="replace") + middle + bytes(self.tail).decode(errors="replace"))


class _Stage:
    def __init__(self, ident: int) -> None:
        self.ident, self.done = ident, threading.Event()
        self.exit_code: int | None = None
        self.error = ""


class ForkServerClient:
    """Starts stages on a connected server, kills them, hears how they ended. ``ended`` is asked once the
    connection closes, for why (the server's exit code, its last output)."""

    def __init__(self, sock: socket.socket, ended: Callable[[], str]) -> None:
        self.sock, self.ended, self.lock, self.pending, self.last_id, self.dead = sock, ended, threading.Lock(), {}, 0, ""
        self.listener = threading.Thread(target=self._listen, name="forkserver-listener", daemon=True)
        self.listener.start()

    def start(self, payload: dict, fds: list[int]) -> _Stage:
        with self.lock:
            if self.dead:
                raise InfrastructureError(self.dead)
            self.last_id += 1
            stage = self.pending[self.last_id] = _Stage(self.last_id)
            try:
                socket.send_fds(self.sock, [json.dumps({**payload, "op": "run", "id": stage.ident}).encode()], fds)
                return stage
            except OSError as exc:
                del self.pending[stage.ident]
                failure = exc
        self.listener.join(timeout=10)  # it says how the server ended
        raise InfrastructureError(self.dead or f"the sandbox's fork server is gone: {failure}")

    def preload(self) -> None:
        self._send({"op": "preload"})

    def kill(self, stage: _Stage) -> None:
        self._send({"op": "kill", "id": stage.ident})

    def close(self) -> None:
        """The server kills every stage and exits when its connection closes. shutdown() first: a close()
        alone neither wakes the listener blocked in recv() nor tells the server."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already gone
            pass
        self.sock.close()

    def _send(self, message: dict) -> None:
        try:
            self.sock.send(json.dumps(message).encode())
        except OSError:  # gone, and its stages with it: the listener tells the waiting ones
            pass

    def _listen(self) -> None:
        while True:
            try:
                message = self.sock.recv(1 << 16)
            except OSError:
                message = b""
            if not message:
                break
            event = json.loads(message)
            with self.lock:
                stage = self.pending.get(event["id"])
                if stage is not None and ("exit" in event or "error" in event):
                    del self.pending[event["id"]]
                    stage.exit_code, stage.error = event.get("exit"), event.get("error", "")
                    stage.done.set()
        why = self.ended()
        with self.lock:
            self.dead = why
            for stage in self.pending.values():
                stage.error = why
                stage.done.set()
            self.pending.clear()


@dataclass(frozen=True)
class StageOutcome:
    exit_code: int | None  # None when it was killed at the timeout
    timed_out: bool
    duration_s: float
    stdout: str
    stderr: str  # without the confinement's marker line
    truncated: bool
    isolation: str  # what the marker line said


def run_forked(client: ForkServerClient, payload: dict, *, timeout_s: float, max_output_bytes: int) -> StageOutcome:
    """One stage on ``client``'s server: its output kept head + tail, killed at ``timeout_s``."""
    out, err = OutputTail(max_output_bytes), OutputTail(max_output_bytes)
    (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
    start = time.monotonic()
    try:
        stage = client.start(payload, [out_w, err_w])
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    pumps = [threading.Thread(target=_pump, args=(open(fd, "rb"), tail), daemon=True)
             for fd, tail in ((out_r, out), (err_r, err))]
    for p in pumps:
        p.start()
    timed_out = False
    try:
        timed_out = not stage.done.wait(timeout=timeout_s)
    finally:  # also on KeyboardInterrupt: never leave a student's stage behind
        if not stage.done.is_set():
            client.kill(stage)
            stage.done.wait(timeout=KILL_WAIT_S)
    duration = time.monotonic() - start
    for p in pumps:
        p.join(timeout=5)
    if not stage.done.is_set():
        raise InfrastructureError(f"the sandbox could not kill a stage within {KILL_WAIT_S:g} s")
    if stage.error:
        raise InfrastructureError(stage.error)
    isolation, stderr = _split_marker(err.text())
    if stderr.startswith(FAILED):  # confinement failed: the stage never ran (fail closed)
        raise InfrastructureError("the sandbox could not confine the stage, so it did not run it: "
                                  + stderr[len(FAILED):].partition("\n")[0])
    if isolation is None:  # the stage ended before its confinement reported: the grader's failure
        raise InfrastructureError(f"the sandbox did not start the stage (exit code {stage.exit_code}): "
                                  f"{stderr.strip()[-1500:] or 'no output'}")
    return StageOutcome(exit_code=None if timed_out else stage.exit_code, timed_out=timed_out,
                        duration_s=duration, stdout=out.text(), stderr=stderr,
                        truncated=bool(out.dropped or err.dropped), isolation=isolation)


def _pump(stream: IO[bytes], tail: OutputTail) -> None:
    with stream:
        while chunk := stream.read1(65536):
            tail.feed(chunk)


def _split_marker(stderr: str) -> tuple[str | None, str]:
    """(what isolated the stage, the student's stderr); None when the confinement never reported."""
    first, _, rest = stderr.partition("\n")
    if first.startswith(MARKER):
        return first[len(MARKER):], rest
    return None, stderr
