"""Try to write in many places; print which writes succeeded as JSON."""
import json
import sys

targets = ["/root_file", "/etc/passwd", "/job/x", "/submission/x", "/opt/grader/grader/x", "/out/ok.txt",
           "/tmp/ok.txt", "/scratch/ok.txt"] + sys.argv[1:]
results = {}
for path in targets:
    try:
        with open(path, "a") as handle:
            handle.write("written from the sandbox\n")
        results[path] = "ok"
    except OSError as exc:
        results[path] = f"{type(exc).__name__}: {exc.strerror}"
print(json.dumps(results))
