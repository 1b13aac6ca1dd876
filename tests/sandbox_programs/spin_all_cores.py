"""A stage that ignores `threads`: one busy process per core for SECONDS of wall clock; prints the wall time
and the CPU time its processes got, as JSON."""
import json
import os
import sys
import time

seconds = float(sys.argv[1])
start = time.monotonic()
children = []
for _ in range(os.cpu_count() or 2):
    pid = os.fork()
    if pid == 0:
        while time.monotonic() - start < seconds:
            pass
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
times = os.times()
print(json.dumps({"wall": time.monotonic() - start, "cpu": times.children_user + times.children_system,
                  "processes": len(children)}))
