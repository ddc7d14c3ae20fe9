"""Errors a user can fix (bad config, bad data, missing files): the CLI prints them as one line
and exits with status 2."""

from contextlib import contextmanager
from typing import Iterator


class UserError(Exception):
    """A problem with the user's input, reported as one line."""


@contextmanager
def config_errors() -> Iterator[None]:
    """Where the config reaches a library function that refuses bad values with ValueError
    (a partition, a model shape, a noise split): that refusal as a one-line UserError. Only
    around such calls, so a ValueError from a bug elsewhere keeps its traceback."""
    try:
        yield
    except ValueError as error:
        raise UserError(f"config error: {error}") from None
