"""Lists the stage's /dev and tries the host's terminals and a new device entry; prints JSON."""
import glob
import json
import os
import pty

found = {"dev": sorted(os.listdir("/dev")), "pts": sorted(os.listdir("/dev/pts")), "opened": []}
for path in ["/dev/tty", "/dev/console", *glob.glob("/dev/tty*"), *glob.glob("/dev/pts/[0-9]*")]:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK))
        found["opened"].append(path)
    except OSError:
        pass
try:
    open("/dev/planted", "w").close()
    found["created"] = True
except OSError:
    found["created"] = False
master, slave = pty.openpty()  # its own pts instance works
found["own_pty"] = os.ttyname(slave)
with open("/dev/null", "w") as null, open("/dev/urandom", "rb") as rnd:
    null.write("x")
    found["urandom"] = len(rnd.read(8))
print(json.dumps(found))
