"""Errors a user can fix (bad config, bad data, missing files): the CLI prints them as one line
and exits with status 2."""


class UserError(Exception):
    """A problem with the user's input, reported as one line."""
