"""Write 100 MB to stdout, then a last line the tail must keep."""
import sys

chunk = b"x" * (1 << 20)
for _ in range(100):
    sys.stdout.buffer.write(chunk)
sys.stdout.buffer.write(b"\nEND-OF-OUTPUT\n")
sys.stdout.flush()
