"""entk: feature identification via the empirical NTK."""
