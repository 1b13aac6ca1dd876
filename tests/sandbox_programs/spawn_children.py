"""An ordinary stage that starts a few processes (a DataLoader with workers does): fork argv[1] children,
each exits at once; prints "spawned N" or the error. Exit code 1 when a fork failed."""
import os
import sys

n = int(sys.argv[1])
try:
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
except OSError as exc:
    print(f"fork failed: {exc}")
    sys.exit(1)
print(f"spawned {n}")
