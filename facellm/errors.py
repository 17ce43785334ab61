"""User-facing errors: the CLI prints their message on one line and exits non-zero, no traceback."""


class FacellmError(Exception):
    """A problem with the user's input (a path, a file, a setting), explained in the message."""
