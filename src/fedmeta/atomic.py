"""Whole files or none: every file fedmeta writes goes to a temporary name beside its
destination and is renamed onto it once complete, so a crash or a kill never leaves one
half-written (a rename within a directory is atomic on POSIX)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `path` (this process's, ending in `suffix`) to write the whole
    file to: renamed onto `path` when the block ends, removed if it raises."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_atomic(path: Path, text: str) -> None:
    write_atomic_bytes(path, text.encode("utf-8"))
