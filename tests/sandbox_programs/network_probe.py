"""Try to reach an outside address and the host's loopback; print what happened to each as JSON."""
import json
import socket
import sys

port = int(sys.argv[1])
results = {}
for host, target_port in (("1.1.1.1", 80), ("127.0.0.1", port)):
    try:
        with socket.create_connection((host, target_port), timeout=2):
            results[f"{host}:{target_port}"] = "connected"
    except OSError as exc:
        results[f"{host}:{target_port}"] = f"{type(exc).__name__}: {exc}"
results["interfaces"] = [name for _, name in socket.if_nameindex()]
print(json.dumps(results))
