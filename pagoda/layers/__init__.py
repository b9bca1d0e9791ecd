"""Building blocks for model plugins."""
