"""Pictures a person would rather look at than read: grids, curves, videos."""
