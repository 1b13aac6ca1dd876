"""Allocate 4 GB in 64 MB blocks, writing every byte, so the pages are really resident."""
blocks = []
for _ in range(64):
    blocks.append(b"\x01" * (64 << 20))  # bytes * n writes all n bytes: resident, not lazily mapped
print("allocated 4 GB: the memory limit did not hold", flush=True)
