"""fedmeta."""
