"""Client-side algorithms, one module each."""
