"""Fork without end; every child forks too. Failed forks are retried, so only a kill ends it."""
import os

print("forking", flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
