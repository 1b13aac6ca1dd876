"""Write up to 2 GB into the folder argv[1], as 32 MB files (under any per-file limit), until the first error.
Prints JSON: bytes written, the error. argv[2], if given: a small file written there first ("kept")."""
import json
import os
import sys

folder, written, error = sys.argv[1], 0, ""
if len(sys.argv) > 2:
    with open(sys.argv[2], "w") as f:
        f.write("kept")
chunk = b"x" * (8 << 20)
try:
    for n in range(64):  # 64 x 32 MB = 2 GB
        with open(os.path.join(folder, f"fill-{n}.bin"), "wb") as f:
            for _ in range(4):
                f.write(chunk)
                f.flush()
                written += len(chunk)
except OSError as exc:
    error = f"{type(exc).__name__}: {exc.strerror}"
print(json.dumps({"written": written, "error": error}))
