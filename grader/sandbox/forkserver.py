"""The local sandbox's fork server: trusted, sandbox-side, it imports torch ONCE and forks one child per stage.

``python -s -m grader.sandbox.forkserver --fd N --parent-pid P`` is started by ``grader.sandbox.local``, and
``... --listen /ctl/server.sock --clean /tmp --clean /scratch`` is PID 1 of one submission's container
(``grader.sandbox.container.engine``); never by hand. Starting a Python that imports torch costs about 2 s on a small machine; paid by every stage of
every submission it was most of what grading a submission cost beyond its own work (bench/overhead.py). Here
it is paid once per server: each stage is a ``fork()`` of this process, confined (``confine.confine``) before
any student code runs, then either running ``grader.runner`` in the child or exec'ing a command.

In a container (``--listen``) the container is the confinement: the server runs as the container's own
unprivileged user, a stage is a plain fork, and after every stage the server kills every other process of
the container (it is PID 1: ``kill(-1)`` spares only itself) and empties the scratch folders, so the next
stage of the same submission starts as clean as a fresh container would; no other student is ever in it.

What a child inherits is this process's memory and nothing else: the server never imports student code,
``reference/`` or any grading data, never initialises CUDA (the child does, after CUDA_VISIBLE_DEVICES is set)
and never runs a parallel torch op (an OpenMP pool does not survive fork). The child closes every
descriptor except the stage's stdout/stderr pipes, so it cannot talk to the server.

Protocol on the SOCK_SEQPACKET socket (one JSON message each way per event):
  host -> server  {"op": "preload"}: import torch now (else before the first runner stage);
                  {"op": "run", "id": I, "config": CONFINE_CONFIG, "argv": [...] | "runner": [...],
                  "deadline_s": S (container: killed by the server itself S seconds on)}
                  with the stage's stdout and stderr pipe ends passed as descriptors;
                  {"op": "kill", "id": I}
  server -> host  {"id": I, "pid": PID} once forked; {"id": I, "exit": CODE} once reaped (CODE as Popen's
                  returncode: negative for a signal); {"id": I, "error": TEXT} when it could not fork.
The server dies with the grader (parent-death signal; a container is removed by the grader) and when the
socket closes; its children with it.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import selectors
import shutil
import signal
import socket
import sys
import threading
import time
import traceback

from grader.sandbox import cpushare
from grader.sandbox.confine import SANDBOX_PACKAGES, MARKER, confine, prctl, set_parent_death_signal

__all__ = ["main", "PRELOAD"]

# Imported once by the server, so no stage pays for them: what the runner, its dataset loader and most
# submissions use. Trusted code only (importing grader.data.dataset reads no data). torch._dynamo: the first
# optimizer a process constructs imports it (~1 s on a small machine), so every training stage (overfit,
# train) would pay it again; torchvision costs little more once it is loaded (it imports it too).
# grader.core.voc, not grader.data.dataset: that one imports the dataset generator, which no stage may hold in memory.
PRELOAD = ("numpy", "torch", "torch.nn", "torch.nn.functional", "torch.optim", "torch._dynamo", "torchvision",
           "grader.runner", "grader.core.voc")
KILL_GRACE_S = 5.0  # after SIGTERM to a stage's relay (it copies the out folder out), SIGKILL its process group


PR_SET_DUMPABLE = 4


class Server:
    def __init__(self, sock: socket.socket, *, clean: tuple[str, ...] = (), container: bool = False) -> None:
        self.sock, self.children, self.kill_after = sock, {}, {}  # pid -> id; pid -> SIGKILL deadline
        self.deadlines: dict[int, float] = {}  # container: pid -> when the stage ends whatever the grader does
        self.clean, self.container, self.preloaded = clean, container, False
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        self.wake_w = wake_w
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a Python handler, so the wakeup fd is written
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        if not container:
            cpushare.sweep()  # the empty stage cgroups of a fork server that was killed outright

    def serve(self) -> None:
        while True:
            due = [*self.kill_after.values(), *self.deadlines.values()]
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            for key, _ in self.selector.select(timeout):
                if key.fileobj is self.sock:
                    message, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 2)
                    if not message:  # the grader closed the socket: take every stage down with us
                        self._kill_all()
                        return
                    self._handle(json.loads(message), fds)
                else:
                    os.read(self.wake_r, 4096)
            self._reap()
            now = time.monotonic()
            for pid in [p for p, deadline in self.kill_after.items() if deadline <= now]:
                _signal_group(pid, signal.SIGKILL)
                del self.kill_after[pid]
            for pid in [p for p, deadline in self.deadlines.items() if deadline <= now]:
                del self.deadlines[pid]  # the budget plus a grace passed and no grader killed it: we do
                _signal_group(pid, signal.SIGKILL)
                self._sweep()

    def _handle(self, request: dict, fds: list[int]) -> None:
        if request["op"] == "kill":
            for pid, ident in list(self.children.items()):  # a sweep reaps (and forgets) children
                if ident == request["id"] and self.container:
                    _signal_group(pid, signal.SIGKILL)
                    self._sweep()
                elif ident == request["id"]:
                    os.kill(pid, signal.SIGTERM)  # the relay SIGKILLs the namespace's PID 1
                    self.kill_after[pid] = time.monotonic() + KILL_GRACE_S
            return
        if (request["op"] == "preload" or "runner" in request) and not self.preloaded:
            _preload()
            self.preloaded = True
        if request["op"] == "preload":
            return
        try:
            pid = os.fork()
        except OSError as exc:
            self._send({"id": request["id"], "error": f"fork failed: {exc}"})
        else:
            if pid == 0:
                self._child(request, fds)  # never returns
            self.children[pid] = request["id"]
            if self.container and request.get("deadline_s"):
                self.deadlines[pid] = time.monotonic() + float(request["deadline_s"])
            self._send({"id": request["id"], "pid": pid})
        for fd in fds:
            os.close(fd)

    def _reap(self) -> None:
        while self.children:
            try:  # peek first: the group is killed while its leader's pid cannot be reused
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            _signal_group(info.si_pid, signal.SIGKILL)  # nothing of the stage outlives it
            _, status = os.waitpid(info.si_pid, 0)
            if not self.container:
                cpushare.remove(info.si_pid)  # its CPU share's cgroup, now empty
            ident = self.children.pop(info.si_pid, None)
            self.kill_after.pop(info.si_pid, None)
            self.deadlines.pop(info.si_pid, None)
            if self.container:
                self._sweep()
            if ident is not None:
                self._send({"id": ident, "exit": os.waitstatus_to_exitcode(status)})

    def _sweep(self) -> None:
        """Container only: every other process of the container dies, the scratch folders are emptied."""
        if os.getpid() != 1:  # never outside a PID namespace of our own: kill(-1) would reach the host's
            return
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:  # nothing else was left
            pass
        while True:  # the killed are our children (orphans are re-parented to PID 1): reap them
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            ident = self.children.pop(pid, None)
            self.deadlines.pop(pid, None)
            if ident is not None:
                self._send({"id": ident, "exit": os.waitstatus_to_exitcode(status)})
        for folder in self.clean:
            for entry in os.scandir(folder):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    try:
                        os.unlink(entry.path)
                    except OSError:
                        pass

    def _kill_all(self) -> None:
        for pid in list(self.children):
            os.kill(pid, signal.SIGTERM)
        time.sleep(0.2)
        for pid in list(self.children):
            _signal_group(pid, signal.SIGKILL)

    def _send(self, message: dict) -> None:
        self.sock.send(json.dumps(message).encode())

    def _child(self, request: dict, fds: list[int]) -> None:
        """The forked stage: drop everything of the server, confine, then run. Ends with os._exit."""
        code = 70
        try:
            os.setsid()
            set_parent_death_signal(signal.SIGTERM)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
            self.selector.close()
            self.sock.close()
            null = os.open(os.devnull, os.O_RDONLY)  # never the server's stdin (a container's lifeline)
            os.dup2(null, 0)
            os.dup2(fds[0], 1)
            os.dup2(fds[1], 2)
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # wakeup pipe, anything torch opened, the fds passed
            config = request["config"]
            if self.container:  # the container is the confinement; the OOM killer takes the stage first
                prctl(PR_SET_DUMPABLE, 1)
                with open("/proc/self/oom_score_adj", "w") as adj:
                    adj.write("1000")
                os.write(2, (MARKER + config["isolation"] + "\n").encode())
                os.chdir(config["cwd"])
            else:
                confine(config)
            os.environ.clear()
            os.environ.update(config["env"])
            if "argv" in request:
                os.execve(request["argv"][0], request["argv"], config["env"])
            code = _run_runner(request["runner"])
        except BaseException:  # noqa: BLE001 - the child must end here, whatever happened
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001 - a closed pipe
                    pass
            os._exit(code)


def _run_runner(argv: list[str]) -> int:
    """``python -m grader.runner ARGV``, in this already-warm interpreter."""
    sys.dont_write_bytecode = True
    sys.path_importer_cache.clear()  # the finders saw the host's folders before chroot
    importlib.invalidate_caches()
    from grader import runner

    try:
        return runner.main(argv)
    except SystemExit as exc:  # as the interpreter would end
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - as the interpreter prints an uncaught exception
        traceback.print_exc()
        return 1


def _preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # torchvision is optional; anything else missing is the grader's fault, said now
            if name != "torchvision":
                raise
    host_only = sorted(m for m in sys.modules if m.split(".")[:1] == ["grader"] and m.count(".") >= 1
                       and m.split(".")[1] not in SANDBOX_PACKAGES)
    if host_only:  # its code and data would be in every stage's memory, whatever the files show
        raise RuntimeError(f"the fork server's preload imported host-only modules {host_only}: a stage must not "
                           "hold them (outside confine.SANDBOX_VISIBLE); import what the runner needs from elsewhere")
    # The preloaded objects are shared copy-on-write with every stage, until something writes to their
    # pages: a full collection in the stage writes into every tracked object's header, copying the whole
    # heap page by page (it cost a unit stage ~0.3 s). Frozen, the stages' collections skip them.
    gc.collect()
    gc.freeze()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _lifeline() -> None:
    """Container only (PID 1): stdin is the grader's attached stream, closed by Docker once that grader is
    gone (killed, out of memory, its node lost), also before it ever connected (a spare still importing
    torch): then every process of the container dies, and the container with its PID 1."""
    while True:
        try:
            if os.read(0, 4096):
                continue
        except OSError:
            pass
        os.write(2, b"[forkserver] the grader is gone: the container ends\n")
        if os.getpid() == 1:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(125)


def main() -> None:
    parser = argparse.ArgumentParser(prog="grader.sandbox.forkserver")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="the local engine's end of a socketpair")
    where.add_argument("--listen", help="a container: listen on this unix socket, serve one connection")
    parser.add_argument("--parent-pid", type=int)  # with --fd; also lets tests find a grader's servers
    parser.add_argument("--clean", action="append", default=[], help="container: emptied after each stage")
    parser.add_argument("--lifeline", action="store_true",
                        help="container: end it when stdin (the grader's attached stream) closes")
    args = parser.parse_args()
    if args.fd is not None:
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != args.parent_pid:  # the grader died before the signal was armed
            sys.exit(1)
        Server(socket.socket(fileno=args.fd)).serve()
        os._exit(0)  # no interpreter teardown (torch's takes a second): every stage is already dead
    prctl(PR_SET_DUMPABLE, 0)  # the stages run as our uid: they must not ptrace the server
    if args.lifeline:
        threading.Thread(target=_lifeline, name="lifeline", daemon=True).start()
    _preload()  # before listening: the grader's stage clocks start once the socket is there
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(args.listen + ".tmp")
    os.chmod(args.listen + ".tmp", 0o666)
    os.rename(args.listen + ".tmp", args.listen)  # appears whole: the grader connects once it exists
    listener.listen(1)
    conn, _ = listener.accept()
    listener.close()
    server = Server(conn, clean=tuple(args.clean), container=True)
    server.preloaded = True
    server.serve()
    os._exit(0)


if __name__ == "__main__":
    main()
