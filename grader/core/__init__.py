"""What both sides of the sandbox use: results, the hostile-output reader, metrics, lazy imports,
cleanup, the VOC loader. Visible inside the sandbox: the standard library, numpy and torch only."""
