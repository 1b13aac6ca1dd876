"""Host only. The job folder, the reference's expected outputs (in a trusted subprocess), the job cache."""
