"""Autograder for the semantic-segmentation assignment. See README.md; the CLI is ``grader``."""
__version__ = "0.1.0"
__all__ = ["__version__"]
