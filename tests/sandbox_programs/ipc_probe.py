"""Kernel objects one student could leave for another: ``leave`` creates them, ``find`` looks for them,
``clean`` removes them (the test's cleanup, on the host). Prints JSON: what was created / found.

A SysV message queue, a SysV shared-memory segment, a POSIX message queue and a key in the user keyring
and in the session keyring, each holding SECRET."""
import ctypes
import json
import os
import platform
import struct
import sys

MSG_KEY, SHM_KEY, MQ_NAME, KEY_DESC = 0x5E6A0513, 0x5E6A0514, b"/seg-isolation-probe", b"seg-isolation-probe"
SECRET = b"left-by-student-a"
IPC_CREAT, IPC_NOWAIT, IPC_RMID = 0o1000, 0o4000, 0
KEYRINGS = {"user_key": -4, "session_key": -3}  # KEY_SPEC_USER_KEYRING, KEY_SPEC_SESSION_KEYRING
SYS = {"x86_64": (248, 250), "aarch64": (217, 219)}.get(platform.machine())  # add_key, keyctl
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
try:
    rt = libc if hasattr(libc, "mq_open") else ctypes.CDLL("librt.so.1", use_errno=True)
except OSError:
    rt = None


def err() -> str:
    return "error: " + os.strerror(ctypes.get_errno())


def leave() -> dict:
    made = {}
    qid = libc.msgget(MSG_KEY, IPC_CREAT | 0o666)
    message = struct.pack("l", 1) + SECRET
    sent = [qid >= 0 and libc.msgsnd(qid, message, len(SECRET), IPC_NOWAIT) == 0 for _ in range(2)]  # one to check
    made["msg"] = "created" if all(sent) else err()
    sid = libc.shmget(SHM_KEY, 4096, IPC_CREAT | 0o666)
    addr = libc.shmat(sid, None, 0) if sid >= 0 else None
    if addr in (None, ctypes.c_void_p(-1).value):
        made["shm"] = err()
    else:
        ctypes.memmove(addr, SECRET, len(SECRET))
        libc.shmdt(ctypes.c_void_p(addr))
        made["shm"] = "created"
    if rt is None:
        made["mq"] = "error: no mq_open"
    else:
        mqd = rt.mq_open(MQ_NAME, os.O_CREAT | os.O_RDWR, 0o666, None)
        made["mq"] = "created" if mqd >= 0 and rt.mq_send(mqd, SECRET, len(SECRET), 0) == 0 else err()
    for name, keyring in KEYRINGS.items():
        if SYS is None:
            made[name] = "error: unknown architecture"
            continue
        key = libc.syscall(ctypes.c_long(SYS[0]), b"user", KEY_DESC, SECRET, ctypes.c_size_t(len(SECRET)),
                           ctypes.c_long(keyring))
        made[name] = "created" if key >= 0 else err()
    return made


def find() -> dict:
    """What a student finds: the SECRET (or "found"), or "none"."""
    seen = {}
    qid = libc.msgget(MSG_KEY, 0)
    buf = ctypes.create_string_buffer(8 + 256)
    if qid < 0:
        seen["msg"] = "none"
    else:
        n = libc.msgrcv(qid, buf, 256, 0, IPC_NOWAIT)
        seen["msg"] = buf.raw[8:8 + n].decode() if n >= 0 else "found (empty)"
    sid = libc.shmget(SHM_KEY, 0, 0)
    addr = libc.shmat(sid, None, 0) if sid >= 0 else None
    seen["shm"] = "none" if addr in (None, ctypes.c_void_p(-1).value) else ctypes.string_at(addr, len(SECRET)).decode()
    mqd = rt.mq_open(MQ_NAME, os.O_RDONLY | os.O_NONBLOCK) if rt is not None else -1
    seen["mq"] = "found" if mqd >= 0 else "none"  # opening it is reading another student's queue
    for name, keyring in KEYRINGS.items():
        seen[name] = "found" if _search(keyring) >= 0 else "none"
    return seen


def _search(keyring: int) -> int:
    if SYS is None:
        return -1
    return libc.syscall(ctypes.c_long(SYS[1]), ctypes.c_long(10), ctypes.c_long(keyring), b"user", KEY_DESC,
                        ctypes.c_long(0))  # KEYCTL_SEARCH


def clean() -> dict:
    qid, sid = libc.msgget(MSG_KEY, 0), libc.shmget(SHM_KEY, 0, 0)
    if qid >= 0:
        libc.msgctl(qid, IPC_RMID, None)
    if sid >= 0:
        libc.shmctl(sid, IPC_RMID, None)
    if rt is not None:
        rt.mq_unlink(MQ_NAME)
    for keyring in KEYRINGS.values():
        key = _search(keyring)
        if key >= 0:
            libc.syscall(ctypes.c_long(SYS[1]), ctypes.c_long(21), ctypes.c_long(key))  # KEYCTL_INVALIDATE
    return {}


mode = sys.argv[1]
result = {"leave": leave, "find": find, "clean": clean}[mode]()
if mode == "leave":  # the probe itself works: the student who left them finds them
    result = {"created": result, "found_by_self": find()}
print(json.dumps(result))
