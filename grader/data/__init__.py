"""Host only. The dataset API, the embedded generator and the per-installation evaluation key."""
