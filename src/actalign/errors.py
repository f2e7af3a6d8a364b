"""The one exception type users see: its message says what went wrong and what to do."""


class ActAlignError(Exception):
    """A problem the user can fix (bad input, missing file, unreachable service, ...)."""
