"""Host only, staff only. Similar pairs of submissions and their side-by-side pages."""
