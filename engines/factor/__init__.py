"""Factor engine (port 8300): time-series exposures, cross-sections, signal evaluation."""
