"""Host only. A submission (folder, .py, .zip, .ipynb, LMS export) -> a clean folder + content hash."""
