"""The Docker engine: the daemon, one container per submission, warm spares, the test image."""
